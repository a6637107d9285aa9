"""Conversion accounting and the summary every converter prints.

Every input record is converted, rejected, or (a sampled dialogue conversion) not sampled, so
``converted + rejected + not sampled = read`` must hold at the end of a run; :class:`Accounting`
counts the four and :meth:`Accounting.check` refuses to report a run where the books do not
balance (that would mean a record vanished).
:func:`summary_table` renders the counts, the rejects by reason and any converter-specific
rows as one rich table; :func:`exit_if_strict` implements ``--strict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lfkit.data_tools.core.rejects import RejectTally, format_reject

if TYPE_CHECKING:  # rich and typer load only where a summary is printed, not in scan workers
    from rich.console import Console
    from rich.table import Table


@dataclass
class Accounting:
    """Records read, converted, rejected and not sampled by one conversion run.

    ``not_sampled``: records a per-role draw never reached (only checked to be well-formed JSON
    with a role), or with ``--validate-all`` valid records it did not draw.
    """

    read: int = 0
    converted: int = 0
    rejected: int = 0
    not_sampled: int = 0

    @property
    def balanced(self) -> bool:
        return self.not_sampled >= 0 and self.converted + self.rejected + self.not_sampled == self.read

    def check(self) -> None:
        """Raise ``RuntimeError`` if some record was neither converted, rejected nor left unsampled."""
        if not self.balanced:
            raise RuntimeError(f"accounting error: {self.equation()} does not hold")

    def equation(self) -> str:
        """``converted 95 + rejected 5 = read 100`` (the line users and tests look for), with
        ``+ not sampled N`` when a draw left records out."""
        unsampled = f" + not sampled {self.not_sampled}" if self.not_sampled else ""
        return f"converted {self.converted} + rejected {self.rejected}{unsampled} = read {self.read}"


def summary_table(
    title: str,
    counts: Accounting,
    rejects: RejectTally | None = None,
    rows: Iterable[tuple[str, str]] = (),
) -> Table:
    """A two-column table: the accounting, rejects by reason, then ``rows`` (label, value)."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("records read", f"{counts.read:,}")
    table.add_row("converted", f"{counts.converted:,}")
    table.add_row("rejected", f"{counts.rejected:,}")
    if rejects is not None:
        for reason, n in sorted(rejects.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"  {reason}", f"{n:,}")
    if counts.not_sampled:
        table.add_row("not sampled", f"{counts.not_sampled:,}")
    for label, value in rows:
        table.add_row(label, value)
    return table


def print_summary(
    console: Console,
    title: str,
    counts: Accounting,
    rejects: RejectTally | None = None,
    rows: Iterable[tuple[str, str]] = (),
) -> None:
    """Check the accounting, print the table, the equation line and where rejects went."""
    counts.check()
    console.print(summary_table(title, counts, rejects, rows))
    console.print(counts.equation())
    if rejects is not None and rejects.count:
        if rejects.path is not None:
            console.print(f"rejects written to {rejects.path}", soft_wrap=True)
        for entry in rejects.first(3):
            console.print(f"  {format_reject(entry)}", markup=False, highlight=False, soft_wrap=True)


def exit_if_strict(console: Console, strict: bool, rejects: RejectTally, show: int = 5) -> None:
    """With ``--strict``, any reject ends the command with exit code 1 after showing the first ones."""
    if not strict or rejects.count == 0:
        return
    import typer

    console.print(f"[red]--strict: {rejects.count} record(s) rejected; first reasons:[/]")
    for entry in rejects.first(show):
        console.print(f"  {format_reject(entry)}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)
