"""Small builders shared by the dialogue data-tool tests (imported by the test modules)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from lfkit.data_tools.cli import app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data_tools" / "samples" / "roleplay_sample.jsonl"


def chat(role: str, n_exchanges: int = 2, tag: str = "", system: str | None = None) -> dict:
    """A valid OpenAI-style record for ``role`` (texts made unique by ``tag``)."""
    messages = []
    for i in range(n_exchanges):
        messages.append({"role": "user", "content": f"question {i} for {role} {tag}"})
        messages.append({"role": "assistant", "content": f"answer {i} from {role} {tag}"})
    record = {"user_id": role, "messages": messages}
    if system is not None:
        record["system"] = system
    return record


def write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    """Write records (dicts are JSON-encoded, bytes/str written as given) one per line."""
    lines = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode("utf-8"))
        else:
            lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    data = b"\n".join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def uneven_corpus(path: Path, counts: dict[str, int]) -> Path:
    """One file with ``counts[role]`` distinct conversations per role, roles interleaved."""
    records = []
    for k in range(max(counts.values())):
        for role, n in counts.items():
            if k < n:
                records.append(chat(role, 1 + k % 3, tag=f"#{k}", system=f"You are {role}."))
    return write_jsonl(path, records)


def run_cli(*args: str):
    """Invoke ``lfkit data ARGS`` in-process with typer's CliRunner."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def per_role(records: list[dict]) -> Counter:
    return Counter(r["role_id"] for r in records)
