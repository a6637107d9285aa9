"""``lfkit data``: convert JSONL into LlamaFactory datasets and report their statistics."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Convert dialogue and ChatTS time-series JSONL into LlamaFactory datasets; report statistics.",
    no_args_is_help=True,
)
