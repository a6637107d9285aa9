"""One input record: where it came from, its raw bytes, and the one way both kinds parse it.

Every converter reads :class:`SourceLine` values (from JSON Lines files or the elements of a
JSON array file, see :mod:`lfkit.data_tools.core.inputs`), parses them with
:func:`parse_record`, and reports a record it cannot convert by raising :class:`RecordError`
with a stable ``reason`` code and the offending ``field``.

Non-finite numbers: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, but Python's
``json.dumps`` writes them, so real files have them, usually in metadata nobody converts.
:func:`parse_record` reads such a record with Python's parser when orjson refuses it, so a
``NaN`` in an unused field never costs the record (dialogue and time series alike); a converter
that uses a field checks its values itself (the time-series converter rejects a non-finite
series value, naming the series and index).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson


class SourceLine(NamedTuple):
    """One input record: its file, its position and its raw bytes (no newline, no BOM).

    ``lineno`` is the 1-based line number in a JSON Lines file, or the 0-based index of the
    element in a JSON array file (``element`` is then true), so ``jq '.[N]'`` finds it.
    ``error`` is set by the reader for bytes it could not even split into a record (the rest
    of a broken JSON array): :func:`parse_record` rejects them with that message. ``offset``
    is the record's byte offset in the (decompressed) file, or its element index in an array:
    its place in the inputs, from which the per-role draw hashes it.
    """

    path: str
    lineno: int
    raw: bytes
    element: bool = False
    error: str | None = None
    offset: int = 0

    @property
    def where(self) -> str:
        """``file:line`` or ``file[index]``: how humans find the record."""
        return f"{self.path}[{self.lineno}]" if self.element else f"{self.path}:{self.lineno}"


class RecordError(ValueError):
    """A record that cannot be converted.

    ``reason`` is a short stable code (``"malformed_json"``, ``"missing_role_key"`` ...) that
    tests and scripts can match on; ``field`` names the offending field (``"messages[2].role"``)
    or is ``None`` when the whole record is at fault; the message is for humans.
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


def parse_record(line: SourceLine) -> dict[str, Any]:
    """Parse one record into a JSON object, or raise :class:`RecordError`.

    Reasons: ``invalid_utf8`` (bytes that are not UTF-8), ``malformed_json`` (with orjson's
    position message), ``not_an_object`` (valid JSON that is a list, string, number ...).
    ``NaN`` / ``Infinity`` literals are accepted (see the module docstring).
    """
    if line.error is not None:
        raise RecordError("malformed_json", line.error)
    try:
        obj = orjson.loads(line.raw)
    except orjson.JSONDecodeError as err:
        obj = _lenient(line.raw, err)
    if type(obj) is not dict:
        raise RecordError("not_an_object", f"expected a JSON object, got a JSON {json_type(obj)}")
    return obj


def _lenient(raw: bytes, err: orjson.JSONDecodeError) -> Any:
    """Python's parser for what orjson refused: it also reads NaN and Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as uerr:
        raise RecordError(
            "invalid_utf8", f"line is not valid UTF-8 (byte {uerr.start}: {uerr.reason})"
        ) from None
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RecordError("malformed_json", f"malformed JSON: {err}") from None


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
