"""Stream the elements of a JSON array file as raw bytes, without loading the array.

LlamaFactory's own demo data (``glaive_toolcall_en_demo.json``, ``mllm_demo.json``) and many
exported datasets are one pretty-printed JSON array, sometimes of several GB. Reading such a
file with ``json.load`` needs the whole array in memory; reading it as JSON Lines gives one
``malformed_json`` per physical line. :func:`iter_elements` instead finds the boundaries of the
top-level elements with a small tokenizer (strings, brackets and commas only; it never builds
a value) and hands each element's bytes to the caller, which parses it like a JSONL line. So a
malformed element is one reject, memory holds one element plus a read buffer, and the element
bytes are exactly what the rejects file shows.

What cannot be split (no opening ``[``, an unterminated string, unbalanced brackets, text after
the closing ``]``) ends the stream with one :class:`ArrayError`, which the reader turns into a
``malformed_json`` reject for the rest of the file, so no record vanishes silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

READ_SIZE = 1 << 20
WHITESPACE = b" \t\r\n"
# a complete string (or a string running to the end of the buffer: ``close`` is then None),
# or a structural character; everything else (numbers, literals, whitespace) is skipped
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*(?P<close>")?|[\[\]{},]', re.DOTALL)


class ArrayError(ValueError):
    """The array cannot be split past this point; ``index`` is the element being read."""

    def __init__(self, index: int, message: str, rest: bytes) -> None:
        super().__init__(message)
        self.index, self.message, self.rest = index, message, rest


def iter_elements(fh: IO[bytes], read_size: int = READ_SIZE) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, raw bytes)`` of each top-level element of the JSON array in ``fh``.

    ``fh`` is positioned at the start of the array (a BOM already skipped). Blank elements
    (``[1,,2]``) are yielded as empty bytes so the caller rejects them with their index.
    Raises :class:`ArrayError` when the rest cannot be split.
    """
    buf = b""
    pos = 0  # scanning position in buf
    start = -1  # start of the current element in buf (-1: before the opening bracket)
    depth = 0
    index = 0
    eof = False
    want = read_size
    while True:
        if not eof:
            data = fh.read(want)
            eof = not data
            buf += data
        if start < 0:  # find the opening bracket
            head = buf.lstrip(WHITESPACE)
            if not head and not eof:
                buf, pos = b"", 0
                continue
            if not head.startswith(b"["):
                raise ArrayError(0, "the file does not start with a JSON array '['", head[:200])
            buf = head
            pos = start = 1
            depth = 1
        incomplete = False
        for m in _TOKEN.finditer(buf, pos):
            char = buf[m.start()]
            if char == 0x22:  # a string
                if m.group("close") is None:
                    incomplete = True
                    pos = m.start()
                    break
                continue
            if char in b"[{":
                depth += 1
            elif char in b"]}":
                depth -= 1
                if depth == 0:
                    element = buf[start : m.start()].strip(WHITESPACE)
                    if element or index:
                        yield index, element
                    tail = buf[m.end() :] + (b"" if eof else fh.read())
                    if tail.strip(WHITESPACE):
                        raise ArrayError(index + 1, "text after the closing ']' of the array", tail[:200])
                    return
                if depth < 0:
                    raise ArrayError(index, "unbalanced brackets", buf[start:][:200])
            elif depth == 1:  # a comma between top-level elements
                yield index, buf[start : m.start()].strip(WHITESPACE)
                index += 1
                start = m.end()
        else:
            pos = len(buf)
        if eof:
            what = "an unterminated string" if incomplete else "no closing ']'"
            raise ArrayError(index, f"the array ends early: {what}", buf[start:][:200])
        buf, pos = buf[start:], pos - start
        start = 0
        # a string longer than the buffer: read as much again, so a huge string is not rescanned
        # once per read_size (quadratic); back to read_size once it is complete
        want = max(read_size, len(buf) - pos) if incomplete else read_size
