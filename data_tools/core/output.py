"""Dataset files in the format LlamaFactory loads: JSON Lines (default) or Parquet.

Converters produce each output row as one JSON Lines line (bytes). :class:`RowWriter` writes
those rows to a staged output file (:class:`lfkit.atomic.AtomicGroup`) either as they are
(``jsonl``) or as a Parquet file (``parquet``, through pyarrow, with an explicit schema).

LlamaFactory 0.9.5 loads both the same way: ``dataset_info.json``'s ``file_name`` extension
picks the ``datasets`` builder (``FILEEXT2TYPE`` in ``extras/constants.py``: ``jsonl`` ->
``json``, ``parquet`` -> ``parquet``) and the entry's ``columns``/``tags`` are read alike.
Parquet loads faster (no JSON parsing, columnar) and is a fraction of the size
(compressed with zstd).

Columns a split registers but a row lacks (a text-only conversation in a dataset that also
has images, say) are filled with the empty value of the column (``""`` or ``[]``), so every
row has every registered column; pyarrow's JSON reader and LlamaFactory's converters then see
one schema. Rows that need no filling are copied as bytes.
"""

from __future__ import annotations

from enum import Enum
from typing import IO, Any

import orjson

PARQUET_ROWS_PER_GROUP = 4096


class OutputFormat(str, Enum):
    """The dataset file format (``--format``)."""

    jsonl = "jsonl"
    parquet = "parquet"


def dataset_file(name: str, fmt: OutputFormat) -> str:
    """``NAME.jsonl`` or ``NAME.parquet``."""
    return f"{name}.{fmt.value}"


# The value types of the columns lfkit writes, for the Parquet schema (pyarrow type names).
COLUMN_TYPES: dict[str, str] = {
    "messages": "messages",  # list<struct<role: string, content: string>>
    "system": "string",
    "tools": "string",  # a JSON list of tool schemas, as LlamaFactory's ToolFormatter reads it
    "images": "paths",  # list<string>
    "videos": "paths",
    "audios": "paths",
    "timeseries": "series",  # list<list<double>>
    "role_id": "string",
}
EMPTY = {"string": "", "paths": [], "series": [], "messages": []}


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    if kind == "messages":
        return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if kind == "paths":
        return pa.list_(pa.string())
    if kind == "series":
        return pa.list_(pa.list_(pa.float64()))
    return pa.string()


def arrow_schema(columns: list[str]) -> Any:
    """The Parquet schema of a file with exactly ``columns`` (see :data:`COLUMN_TYPES`)."""
    import pyarrow as pa

    return pa.schema([(c, _arrow_type(COLUMN_TYPES[c])) for c in columns])


def filled_row(line: bytes, columns: list[str], fill: list[str]) -> dict[str, Any]:
    """One JSON Lines row as a dict with every column of ``fill`` present (see the module docstring)."""
    row = orjson.loads(line)
    for column in fill:
        if column not in row:
            row[column] = EMPTY[COLUMN_TYPES[column]]
    return {c: row[c] for c in columns}


def rows_table(data: bytes, columns: list[str], fill: list[str]) -> Any:
    """JSON Lines rows as a pyarrow table with exactly ``columns`` (a Parquet shard's content)."""
    import pyarrow as pa

    fill = [c for c in columns if c in fill]
    rows = [filled_row(line, columns, fill) for line in data.splitlines()]
    return pa.Table.from_pylist(rows, schema=arrow_schema(columns))


class RowWriter:
    """Writes JSON Lines rows to ``fh`` in ``fmt`` with exactly ``columns`` (in that order).

    ``fill`` names the optional columns that some rows may lack (see the module docstring).
    Call :meth:`close` once at the end (it writes the Parquet footer).
    """

    def __init__(self, fh: IO[bytes], fmt: OutputFormat, columns: list[str], fill: list[str]) -> None:
        self.fh, self.fmt, self.columns, self.fill = fh, fmt, columns, [c for c in columns if c in fill]
        self._batch: list[dict[str, Any]] = []
        self._parquet = None
        if fmt is OutputFormat.parquet:
            import pyarrow.parquet as pq

            self._schema = arrow_schema(columns)
            self._parquet = pq.ParquetWriter(fh, self._schema, compression="zstd")

    def write(self, data: bytes) -> None:
        """Write one or more rows (JSON Lines, each ending in a newline)."""
        if self._parquet is None and not self.fill:
            self.fh.write(data)
            return
        for line in data.splitlines():
            row = filled_row(line, self.columns, self.fill)
            if self._parquet is None:
                self.fh.write(orjson.dumps(row) + b"\n")
                continue
            self._batch.append(row)
            if len(self._batch) >= PARQUET_ROWS_PER_GROUP:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._batch:
            self._parquet.write_table(pa.Table.from_pylist(self._batch, schema=self._schema))
            self._batch.clear()

    def close(self) -> None:
        """Finish the file (the Parquet footer); the caller publishes it."""
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
