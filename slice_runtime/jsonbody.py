"""V2 JSON request bodies read without a Python object per number (pure).

`json.loads` turns every number of a body into a Python float (32 bytes each, several times
the body's size) and holds the GIL for the whole document: a 60 MB body took seconds in
which the gateway answered nothing, health probes included. Here the tensors' `data`
arrays of numbers are cut out of the document first; what is left (names, shapes,
parameters: small) goes to `json.loads`, and each array is read in pieces of about a
megabyte into one array: by orjson when the piece is plain JSON numbers (a few milliseconds
a megabyte, about six times numpy's text parser), else by numpy's. Between pieces the
interpreter may switch threads, so a parse on a worker thread leaves the event loop free,
and the extra memory is one piece (and its Python numbers) plus the arrays themselves.

Numbers are read as numpy reads them, which also accepts `nan`/`inf` spellings and a
leading `+`; JSON's `NaN`, `Infinity`, `-Infinity` (bare, as Python writes them, or as
the strings this gateway writes) are accepted too. A document this reader cannot take
apart (a `data` array of anything else) falls back to `json.loads` up to
`FALLBACK_MAX_BYTES`; beyond that it is refused rather than parsed slowly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from slice_runtime.errors import InvalidInput

PIECE_BYTES = 1 << 20
FALLBACK_MAX_BYTES = 8 << 20
ENVELOPE_MAX_BYTES = 1 << 20
_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_PLACEHOLDER_KEY = "$mopar.data"
# Non-finite numbers as strings (how `v2` writes them, valid JSON) and as numpy spells them.
_QUOTED = ((b'"NaN"', b"nan"), (b'"Infinity"', b"inf"), (b'"-Infinity"', b"-inf"))
_WHITESPACE = b" \t\r\n"
_LONE_SIGN = re.compile(rb"[-+](?![0-9.nNiI])")


@dataclass(frozen=True)
class NumberText:
    """The text of one `data` array of numbers, from its '[' to its matching ']'."""

    body: bytes
    start: int
    end: int

    def to_array(self, dtype: np.dtype[Any], limit: int) -> np.ndarray:
        """The numbers as a flat array of `dtype`; ValueError (the caller names the input) when
        the text holds anything else, more than `limit` numbers, or values `dtype` cannot hold."""
        parse = _parse_dtype(dtype)
        # Floats land in `dtype` straight away (what `_narrow` would cast them to anyway).
        out = np.empty(min(limit, (self.end - self.start) // 2 + 1), dtype if dtype.kind == "f" else parse)
        filled = 0
        position, stop = self.start + 1, self.end - 1  # inside the outer brackets: flat data has none
        while position < stop:
            cut = self.body.find(b",", min(position + PIECE_BYTES, stop), stop)
            cut = stop if cut < 0 else cut
            values = _parse_piece(self.body[position:cut], parse, dtype.kind == "b")
            if filled + values.size > out.size:
                raise ValueError(f"more than {limit} values")
            out[filled : filled + values.size] = values
            filled += values.size
            position = cut + 1
        return _narrow(out[:filled], dtype)


def loads(body: bytes) -> Any:
    """The decoded document, each `"data": [numbers...]` replaced by its `NumberText`."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (at := _find(body, b'"data"', position)) >= 0:
        match = _DATA_KEY.match(body, at)
        position = at + 1
        if match is None:
            continue  # "data" as a value, or inside a string
        start = match.end() - 1
        end = _closing_bracket(body, start)
        if end is None:
            return _fallback(body)
        spans.append((start, end))
        position = end
    if not spans:
        return _fallback(body)
    pieces, last = [], 0
    for index, (start, end) in enumerate(spans):
        pieces += [body[last:start], b'{"%s":%d}' % (_PLACEHOLDER_KEY.encode(), index)]
        last = end
    pieces.append(body[last:])
    envelope = b"".join(pieces)
    if len(envelope) > ENVELOPE_MAX_BYTES:
        raise InvalidInput(
            f"the request's JSON besides tensor data is {len(envelope)} bytes; at most 1 MiB is accepted"
        )
    document = _json(envelope)
    found = _restore(document, [NumberText(body, s, e) for s, e in spans])
    if found != len(spans):  # a cut landed somewhere other than an input's data: read it as plain JSON
        return _fallback(body)
    return document


def _json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, or an integer of over 4300 digits
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


def _fallback(body: bytes) -> Any:
    if len(body) > FALLBACK_MAX_BYTES:
        raise InvalidInput(
            f"a JSON request over {FALLBACK_MAX_BYTES >> 20} MiB must hold its tensors as 'data' arrays of numbers "
            "(or use the binary tensor extension)"
        )
    return _json(body)


def _restore(document: Any, texts: list[NumberText]) -> int:
    """Put each NumberText where its placeholder is, if that is an input's `data`; how many were."""
    found = 0
    inputs = document.get("inputs") if isinstance(document, dict) else None
    for item in inputs if isinstance(inputs, list) else []:
        data = item.get("data") if isinstance(item, dict) else None
        if isinstance(data, dict) and set(data) == {_PLACEHOLDER_KEY} and isinstance(data[_PLACEHOLDER_KEY], int):
            item["data"] = texts[data[_PLACEHOLDER_KEY]]
            found += 1
    return found


def _closing_bracket(body: bytes, start: int) -> int | None:
    """The end (exclusive) of the array opening at `start`, or None when it holds anything
    but numbers and nested arrays, or brackets in places JSON does not allow."""
    depth = 0
    position = start
    while (at := _next_bracket_or_quote(body, position)) >= 0:
        position = at + 1
        char = body[at]
        if char == ord('"'):
            quoted = next((q for q, _ in _QUOTED if body.startswith(q, at)), None)
            if quoted is None:
                return None
            position = at + len(quoted)
            continue
        if char == ord("["):
            before = _neighbour(body, at, -1)
            if depth and (before is None or before not in b"[,"):
                return None
            depth += 1
        else:
            after = _neighbour(body, at, 1)
            if after is not None and after not in b",]}":
                return None
            depth -= 1
            if depth == 0:
                return at + 1
    return None


# Searches over a long body go a piece at a time: one C call over 100 MB holds the GIL for
# a tenth of a second, and the event loop waits that long.
def _find(body: bytes, needle: bytes, position: int) -> int:
    while position < len(body):
        end = min(position + PIECE_BYTES, len(body))
        at = body.find(needle, position, end + len(needle) - 1)
        if at >= 0:
            return at
        position = end
    return -1


def _next_bracket_or_quote(body: bytes, position: int) -> int:
    """Where the first '[', ']' or '"' at or after `position` is (-1: none). Three `find`s (memchr,
    gigabytes a second) rather than a regular expression's character class (a few hundred MB):
    the next ']' bounds the search for the other two."""
    close = _find(body, b"]", position)
    limit = close if close >= 0 else len(body)
    for needle in (b"[", b'"'):
        at = body.find(needle, position, limit)
        if at >= 0:
            limit = at
    return limit if limit < len(body) else -1


def _neighbour(body: bytes, at: int, step: int) -> int | None:
    """The first byte before (step -1) or after (step 1) `at` that is not whitespace."""
    at += step
    while 0 <= at < len(body):
        if body[at] not in _WHITESPACE:
            return body[at]
        at += step
    return None


def _parse_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype == np.uint64:
        return np.dtype(np.uint64)
    if dtype.kind in "iub":
        return np.dtype(np.int64)
    raise ValueError(f"datatype {dtype} has no numbers to read")


def _parse_piece(piece: bytes, parse: np.dtype[Any], boolean: bool) -> np.ndarray:
    if b"[" in piece or b"]" in piece:  # nested arrays (a copy: most bodies are flat)
        piece = piece.translate(None, b"[]")
    fast = _plain_numbers(piece, parse, boolean)
    if fast is not None:
        return fast
    if not piece.strip(_WHITESPACE + b","):
        return np.empty(0, parse)  # empty nested arrays only
    for quoted, plain in _QUOTED:
        if quoted in piece:
            piece = piece.replace(quoted, plain)
    if boolean:
        piece = piece.replace(b"true", b"1").replace(b"false", b"0")
    if piece.rstrip(_WHITESPACE).endswith(b",") or (parse.kind != "f" and _LONE_SIGN.search(piece)):
        raise ValueError("not a list of numbers")
    values = np.fromstring(piece, dtype=parse, sep=",")
    if values.size != piece.count(b",") + 1:  # numpy before 2.x stopped quietly at the first non-number
        raise ValueError("not a list of numbers")
    if parse.kind == "f" and np.isinf(values).any() and b"inf" not in piece.lower():
        raise ValueError("a number is out of range")  # a finite number past float64, such as 10**400
    if parse.kind in "iu" and values.size:
        info = np.iinfo(parse)
        if values.max() == info.max or values.min() == info.min:  # numpy saturates what does not fit: look closer
            exact = json.loads(b"[" + piece + b"]")
            np.asarray(exact, dtype=parse)  # OverflowError for a number past the type
    return values


def _plain_numbers(piece: bytes, parse: np.dtype[Any], boolean: bool) -> np.ndarray | None:
    """The piece read by orjson (about six times numpy's text parser), when it is plain JSON
    numbers that fit `parse` (and booleans, for a BOOL tensor); None for anything else (quoted
    NaN, numpy's spellings, a mistake), which numpy's reader then reads or names."""
    # Single bytes (memchr): no JSON number holds a quote, a 't' (true) or an 'f' (false).
    if b'"' in piece or (not boolean and (b"t" in piece or b"f" in piece)):
        return None
    try:
        values = orjson.loads(b"[" + piece + b"]")
    except orjson.JSONDecodeError:
        return None
    if parse.kind == "f":
        return np.array(values, dtype=parse)
    array = np.array(values)
    if array.dtype.kind not in "iub":  # a float (or an integer past 64 bits) in integers
        return None
    if array.size and array.dtype.kind != "b":
        info = np.iinfo(parse)
        if array.min() < info.min or array.max() > info.max:
            return None
    return array.astype(parse, copy=False)


def _narrow(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind == "b":
        flags: np.ndarray = values != 0
        return flags
    if dtype.kind in "iu" and dtype != values.dtype and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise OverflowError(f"a value is outside {info.min}..{info.max}")
    return values.astype(dtype, copy=False)
