"""``lfkit data``: convert JSONL into LlamaFactory datasets and report their statistics.

``convert`` and ``stats`` each have one sub-command per kind of data, with that kind's
options only (:mod:`lfkit.data_tools.dialogue.cli`, :mod:`lfkit.data_tools.timeseries.cli`),
so an option of the other kind is an ordinary "no such option" usage error:

    lfkit data convert dialogue chats.jsonl --out data --name rp ...
    lfkit data convert timeseries chatts.jsonl --out data --name ts ...

The older form keeps working: ``lfkit data convert FILES ... [--kind dialogue|timeseries]``
(the kind defaults to dialogue) is the same as naming the sub-command, so existing scripts and
recipes run unchanged (:class:`KindGroup`).
"""

from __future__ import annotations

from typing import Any

import typer
from lfkit.data_tools.core.cli import PlainCommand, PlainGroup
from lfkit.data_tools.dialogue import cli as dialogue_cli
from lfkit.data_tools.timeseries import cli as timeseries_cli

KINDS = ("dialogue", "timeseries")
DEFAULT_KIND = "dialogue"
HELP_OPTIONS = ("--help", "-h")


class KindGroup(PlainGroup):
    """A group whose sub-commands are the kinds of data, reachable by ``--kind`` too.

    ``convert FILES --kind timeseries`` (``--kind`` anywhere, or ``--kind=...``) and plain
    ``convert FILES`` (the default kind) are rewritten to ``convert timeseries FILES`` /
    ``convert dialogue FILES`` before click parses them. An option that belongs to another
    kind's sub-command gets a hint that says so.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._with_kind(args))

    def _with_kind(self, args: list[str]) -> list[str]:
        if not args or args[0] in self.commands or args[0] in HELP_OPTIONS:
            if args and args[0] in self.commands and any(_is_kind(a) for a in args):
                raise typer.BadParameter(
                    f"--kind cannot be combined with the '{args[0]}' sub-command; leave it out"
                )
            return args
        rest, kind = [], None
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--kind" and i + 1 < len(args):
                kind = args[i + 1]
                i += 2
                continue
            if arg.startswith("--kind="):
                kind = arg.split("=", 1)[1]
            else:
                rest.append(arg)
            i += 1
        if kind is not None and kind not in KINDS:
            raise typer.BadParameter(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return [kind or DEFAULT_KIND, *rest]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        return name, _HintingCommand.wrap(command, self, name), rest


def _is_kind(arg: str) -> bool:
    return arg == "--kind" or arg.startswith("--kind=")


class _HintingCommand:
    """Wraps a kind's command so that "No such option" says which kind has that option."""

    @staticmethod
    def wrap(command: Any, group: KindGroup, name: str) -> Any:
        if getattr(command, "_lfkit_hinted", False):
            return command
        make_context = command.make_context

        def hinted(info_name: str, args: list[str], parent: Any = None, **extra: Any) -> Any:
            from typer._click.exceptions import NoSuchOption

            try:
                return make_context(info_name, args, parent=parent, **extra)
            except NoSuchOption as err:
                owner = _owner(group, name, err.option_name)
                if owner is not None:
                    err.message = (
                        f"{err.option_name} is an option of `lfkit data {group.name} {owner}`, "
                        f"not of `lfkit data {group.name} {name}`"
                    )
                raise

        command.make_context = hinted
        command._lfkit_hinted = True
        return command


def _owner(group: KindGroup, name: str, option: str) -> str | None:
    for other, command in group.commands.items():
        if other != name and any(
            option in (*param.opts, *getattr(param, "secondary_opts", ())) for param in command.params
        ):
            return other
    return None


app = typer.Typer(
    cls=PlainGroup,
    help="Convert dialogue and ChatTS time-series JSONL into LlamaFactory datasets; report statistics.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
convert_app = typer.Typer(
    cls=KindGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Convert records into a LlamaFactory dataset: `convert dialogue ...` or `convert timeseries ...` "
    "(`convert FILES ... --kind dialogue|timeseries` works too; the kind defaults to dialogue).",
)
stats_app = typer.Typer(
    cls=KindGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Report statistics: `stats dialogue ...` (per role, duplicates, steps and hours) or "
    "`stats timeseries ...` (sequence budget); `stats FILES ... --kind ...` works too.",
)
convert_app.command("dialogue", cls=PlainCommand)(dialogue_cli.convert)
convert_app.command("timeseries", cls=PlainCommand)(timeseries_cli.convert)
stats_app.command("dialogue", cls=PlainCommand)(dialogue_cli.stats)
stats_app.command("timeseries", cls=PlainCommand)(timeseries_cli.stats)
app.add_typer(convert_app, name="convert")
app.add_typer(stats_app, name="stats")
