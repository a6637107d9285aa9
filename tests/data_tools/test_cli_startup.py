"""What ``lfkit data convert`` costs before it converts anything.

A conversion of a small file is mostly interpreter start and imports. These tests check the
expensive imports stay out of a run that does not need them (pydantic, msgspec, the process
pool, the progress bar), and that the options, checked without pydantic
(:class:`lfkit.data_tools.core.cli.PlainCommand`), get exactly the values and errors typer's
own checks give. The time itself is measured by ``benchmarks/bench_convert.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from dialogue_helpers import chat, write_jsonl
from lfkit.data_tools.cli import convert_app, stats_app
from lfkit.data_tools.core.cli import plain_runtime_param

LFKIT = str(Path(sys.executable).parent / "lfkit")


def imported_modules(*args: str) -> set[str]:
    """The modules a real ``lfkit`` process imports (``python -X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", LFKIT, *args], capture_output=True, text=True, check=True
    )
    return {
        line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }


def test_a_small_conversion_imports_only_what_it_uses(tmp_path):
    src = write_jsonl(tmp_path / "one.jsonl", [chat("a")])
    modules = imported_modules("data", "convert", str(src), "--out", str(tmp_path / "o"), "--name", "one")
    assert (tmp_path / "o" / "one.jsonl").exists()
    for heavy in ("pydantic", "typer._adapters", "msgspec", "concurrent.futures", "rich.progress", "ray"):
        assert heavy not in modules, heavy
    sampled = imported_modules(
        "data", "convert", str(src), "--out", str(tmp_path / "s"), "--name", "one", "--role-key", "user_id",
        "--max-per-role", "1",
    )  # fmt: skip
    assert "msgspec" in sampled and "pydantic" not in sampled  # pass 1 reads roles with msgspec


def _params():
    for group in (convert_app, stats_app):
        command = typer.main.get_command(group)
        for name, sub in command.commands.items():
            for param in sub.params:
                yield f"{group.info.name or 'group'}.{name}.{param.name}", param


VALUES = {str: ["x", "7"], int: ["3", "0", "-2", "abc"], float: ["0.5", "1", "2.5", "x"], Path: ["a/b.jsonl"]}


@pytest.mark.parametrize("name,param", list(_params()), ids=lambda x: x if isinstance(x, str) else "")
def test_plain_checks_give_what_typers_own_give(name, param):
    from typer._coercion import build_runtime_param

    plain = plain_runtime_param(param)
    descriptor = param.type_descriptor
    if plain is None:
        pytest.skip(f"{name}: left to typer's own checks")
    typer_own = build_runtime_param(descriptor)
    annotation = descriptor.annotation
    item = annotation.__args__[0] if getattr(annotation, "__origin__", None) is list else annotation
    if isinstance(item, type) and issubclass(item, __import__("enum").Enum):
        samples = [m.value for m in item] + [str(list(item)[0].value).upper(), "nope"]
    elif item is bool:
        samples = [True, False, "yes", "0", "maybe"]
    else:
        samples = VALUES[item]
    ctx = typer.Context(typer.main.get_command(convert_app))
    for sample in samples:
        value = [sample] if item is not annotation else sample
        try:
            expected = typer_own.coerce(value, param=param, ctx=ctx)
        except typer.BadParameter:
            with pytest.raises(typer.BadParameter):
                plain.coerce(value, param=param, ctx=ctx)
            continue
        assert plain.coerce(value, param=param, ctx=ctx) == expected, (name, sample)
