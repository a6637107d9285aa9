"""What the ``lfkit data`` sub-commands of both kinds share: console, inputs, interruptions.

Kept free of heavy imports: ``lfkit --help`` imports the command modules.

:class:`PlainCommand` is the class of the ``lfkit data`` commands: typer (0.29) checks every
option's value through a pydantic ``TypeAdapter`` it builds when the command runs, which costs
a pydantic import and about 25 schema builds, as much CPU as converting a small file. The
options of these commands are plain strings, paths, numbers with bounds and enums, so
:class:`PlainCommand` gives them the same checks without pydantic (any other kind of option
keeps typer's own); ``tests/data_tools/test_cli_startup.py`` checks both give the same values.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from lfkit.data_tools.core.inputs import InputSet, Skipped
    from rich.console import Console

SHOW_SKIPPED = 10


class Format(str, Enum):
    """The dataset file format (``--format``), for both kinds."""

    jsonl = "jsonl"
    parquet = "parquet"


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def expand(inputs: list[Path]) -> InputSet:
    """The files to read; a missing path or an empty directory is a usage error naming it."""
    from lfkit.data_tools.core.inputs import expand_inputs

    try:
        return expand_inputs(inputs)
    except (OSError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="INPUTS") from None


@contextlib.contextmanager
def interruptible(wrote: bool = True) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into a clean exit (status 128 + signal) after the run cleaned up."""
    from lfkit.data_tools.core.workdir import Interrupted, exit_on_signals

    try:
        with exit_on_signals():
            yield
    except Interrupted as stop:
        note = "; nothing was written, previous outputs are unchanged" if wrote else ""
        typer.echo(f"interrupted by {stop.name}{note}", err=True)
        raise typer.Exit(code=stop.exit_code) from None


def print_skipped(console: Console, skipped: list[Skipped]) -> None:
    """List the files under input directories that were not read, and why."""
    if not skipped:
        return
    console.print(f"[yellow]{len(skipped)} file(s) under the input directories were not read:[/]")
    for item in skipped[:SHOW_SKIPPED]:
        console.print(f"  {item.path}: {item.reason}", markup=False, soft_wrap=True)
    if len(skipped) > SHOW_SKIPPED:
        console.print(f"  ... and {len(skipped) - SHOW_SKIPPED} more")


def print_stale_work(console: Console, removed: list[Path]) -> None:
    """Say which work folders of killed earlier runs were removed."""
    for path in removed:
        console.print(
            f"removed {path}: the work folder of an earlier run of this name that was killed",
            markup=False,
            soft_wrap=True,
        )


def single_threaded_blas() -> None:
    """Keep numpy's OpenBLAS from starting a spinning thread per core when it is imported.

    The data tools never multiply matrices; OpenBLAS's threads cost about 0.1 s of CPU at
    import on a two-core machine, more than converting a small file. Only before numpy is
    imported does the setting take effect (forked workers inherit it).
    """
    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"):
            os.environ.setdefault(var, "1")


def plain_options(command: Any, ctx: Any) -> None:
    """Give the plain options of a typer command or group their checks without pydantic."""
    for param in command.get_params(ctx):  # with the --help option click adds
        if getattr(param, "_runtime_param", False) is None:  # typer >= 0.29: not built yet
            plain = plain_runtime_param(param)
            if plain is not None:
                param._runtime_param = plain


class PlainCommand(TyperCommand):
    """A typer command whose plain options are checked without pydantic (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_options(self, ctx)
        return super().parse_args(ctx, args)


class PlainGroup(TyperGroup):
    """A typer group whose options (``--help``, completion) are checked as in :class:`PlainCommand`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_options(self, ctx)
        return super().parse_args(ctx, args)


def plain_runtime_param(param: Any) -> Any:
    """typer's runtime coercion of ``param`` done without pydantic, or None to leave it to typer.

    Handles ``bool``, ``str``, ``int`` and ``float`` (with ``min`` / ``max`` / ``clamp``), ``Path``
    without checks on the path, ``Enum`` choices, and lists of these.
    """
    try:
        from typer._coercion import RuntimeParam
    except ImportError:
        return None
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.is_file or descriptor.parameter_info.parser is not None:
        return None
    annotation = descriptor.annotation
    many = get_origin(annotation) is list
    convert = _converter(get_args(annotation)[0] if many else annotation, descriptor.parameter_info)
    if convert is None:
        return None

    class Plain(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                if many:
                    return [
                        convert(item) for item in (value if isinstance(value, (list, tuple)) else [value])
                    ]
                return convert(value)
            except ValueError as err:
                raise typer.BadParameter(str(err), ctx=ctx, param=param) from None

    return Plain(parameter_info=descriptor.parameter_info, annotation=annotation)


def _converter(kind: Any, info: Any) -> Callable[[Any], Any] | None:
    """A function checking one value of type ``kind`` (raising ``ValueError``), if it is plain."""
    path_checks = ("exists", "file_okay", "dir_okay", "writable", "readable", "resolve_path", "allow_dash")
    if kind is bool:
        return _boolean
    if kind is str:
        return lambda value: value if isinstance(value, str) else str(value)
    if kind is Path:
        defaults = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False,
                    "readable": True, "resolve_path": False, "allow_dash": False}  # fmt: skip
        if any(getattr(info, name, defaults[name]) != defaults[name] for name in path_checks):
            return None
        if getattr(info, "path_type", None) not in (None, Path):
            return None
        return lambda value: value if isinstance(value, Path) else Path(value)
    if kind in (int, float):
        return _number(kind, info.min, info.max, info.clamp)
    if isinstance(kind, type) and issubclass(kind, Enum):
        members = list(kind)
        return lambda value: _choice(value, members, info.case_sensitive)
    return None


def _number(kind: type, low: Any, high: Any, clamp: bool) -> Callable[[Any], Any]:
    name = "integer" if kind is int else "float"

    def convert(value: Any) -> Any:
        if isinstance(value, kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"{value!r} is not a valid {name}.") from None
        if low is not None and number < low:
            if not clamp:
                raise ValueError(f"{number} is not in the range {_range(low, high)}.")
            number = kind(low)
        if high is not None and number > high:
            if not clamp:
                raise ValueError(f"{number} is not in the range {_range(low, high)}.")
            number = kind(high)
        return number

    return convert


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    raise ValueError(f"{value!r} is not a valid boolean.")


def _range(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"{low}<=x<={high}"
    return f"x>={low}" if low is not None else f"x<={high}"


def _choice(value: Any, members: list[Enum], case_sensitive: bool) -> Enum:
    if isinstance(value, Enum) and value in members:
        return value
    text = str(value)
    for member in members:
        if member.value == text or (not case_sensitive and str(member.value).lower() == text.lower()):
            return member
    raise ValueError(f"{text!r} is not one of {', '.join(repr(m.value) for m in members)}.")
