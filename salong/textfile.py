"""Text and JSON from files others hand over, read as written.

A line is what ends at "\\n" (a "\\r" before it is dropped): `str.splitlines` would also
split at a form feed, U+2028 or U+2029, which may sit inside a prompt or a JSON string,
and every later line number would be wrong. A UTF-8 byte-order mark before the first
line is not text. JSON nested too deeply for Python's parser (a nesting bomb) is a
`json.JSONDecodeError` like any other bad JSON, not a RecursionError. Text from the
command line that the locale could not decode (`LC_ALL=C`: undecodable bytes arrive as
lone surrogates) is given back as the UTF-8 it was, or refused.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from salong.errors import SalongError


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, with nesting too deep to parse raised as `json.JSONDecodeError`."""
    try:
        return json.loads(text)
    except RecursionError:
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deeply", doc, 0) from None


def split_lines(text: str) -> list[str]:
    """`text` split at "\\n" only (and a "\\r" before it dropped), without a BOM in front."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    return [line.removesuffix("\r") for line in lines]


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file (a BOM in front dropped); a file in another encoding, or a named pipe
    or device (`refuse_special`), is a one-line error naming the problem and the fix. `what`
    names the file in messages ("prompts file", "metadata file")."""
    from salong.checks import refuse_special  # here: salong.checks needs numpy, text does not

    refuse_special(path, what)
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SalongError(f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save it as UTF-8") from None


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (`read_text`, `split_lines`)."""
    return split_lines(read_text(path, what))


def from_command_line(text: str, what: str) -> str:
    """Text as typed: lone surrogates (bytes a C or ASCII locale could not decode) become the
    UTF-8 characters they were, or a one-line error if they were not UTF-8 either."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise SalongError(f"{what} {ascii(text)} is not valid UTF-8 text; type it in a UTF-8 terminal "
                          "(e.g. LANG=C.UTF-8)") from None


def visible(text: str) -> str:
    """`text` with every control character (and line or paragraph separator, and bidi
    override) shown as an escape such as \\x1b, so it cannot move the cursor, retitle the
    window or start a new line when printed to a terminal."""
    return "".join(ch if not _hidden(ch) else ascii(ch)[1:-1] for ch in text)


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI


_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
