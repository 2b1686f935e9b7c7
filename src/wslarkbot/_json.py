"""Fast JSON for the relay's hot path: orjson when it is installed (the ``relay`` extra), else :mod:`json`.

Both functions give the results of the standard library's compact encoding
(``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))``) and ``json.loads``; orjson is only a
faster way to get them (about 5x for a 1.2 KB webhook body, 10x for an envelope). Where orjson would
differ, the standard library does the work:

* :func:`loads`: documents orjson refuses (``NaN``, ``Infinity``, lone surrogates, a byte order mark)
  and documents whose orjson result holds an integral float of 2**63 or more (orjson turns integers beyond
  64 bits into floats; the standard library keeps them exact) are parsed by ``json.loads``, so the result
  is always what ``json.loads`` returns, and invalid JSON raises :class:`ValueError` as it does. Every
  other document is parsed once, floats included (``1.5`` is the same float for both). (Looking through
  the parsed result costs well under a microsecond for a webhook body; a regular expression looking for
  long digit runs in the text cost 20-30 us per 1.2 KB body, 20 times orjson's parse.)
* :func:`dumps`: what orjson does not encode the way :mod:`json` does (dict keys that are not strings,
  integers beyond 64 bits, subclasses of ``str``/``int``/``dict``/``list``, dataclasses, dates) is
  encoded by ``json.dumps``, which also raises the usual :class:`TypeError` for what JSON cannot carry.
  One difference remains: a non-finite float (``nan``, ``inf``: not JSON) is written as ``null`` by
  orjson and as the non-standard ``NaN``/``Infinity`` by the standard library. :func:`loads` never
  returns one for a valid JSON document.

Floats are written in their shortest round-trip form by both (``1e+16`` vs orjson's ``1e16``): the same
value.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FAST", "dumps", "dumps_bytes", "loads"]


#: orjson parses integers beyond 64 bits as floats; a float this large and integral may have been one.
_BIG = 2.0**63


def _maybe_big_int(obj: Any) -> bool:
    """Whether a document orjson parsed holds a float that may have been an integer literal beyond 64 bits
    (an integral float of 2**63 or more): only then can ``json.loads`` give another result."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if abs(item) >= _BIG and item.is_integer():
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def _std_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _std_loads(data: str | bytes | bytearray) -> Any:
    """``json.loads``; a document nested deeper than the interpreter can recurse is a ``ValueError`` like
    any other bad document (a 400 for a webhook, an error frame for a subscriber), not a RecursionError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON document nested too deeply") from None


try:
    import orjson
except ImportError:  # pragma: no cover - the relay extra installs orjson
    orjson = None  # type: ignore[assignment]

#: Whether orjson is used.
FAST = orjson is not None

if orjson is not None:
    # Types orjson would encode where json raises TypeError (or encodes differently): hand them to json.
    _OPTIONS = (
        orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    _orjson_dumps = orjson.dumps
    _orjson_loads = orjson.loads
    _OrjsonDecodeError = orjson.JSONDecodeError

    def dumps_bytes(obj: Any) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes (see the module docstring)."""
        try:
            return _orjson_dumps(obj, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return _std_dumps(obj).encode("utf-8")

    def dumps(obj: Any) -> str:
        """``obj`` as compact JSON text, non-ASCII characters as they are (see the module docstring)."""
        try:
            return _orjson_dumps(obj, option=_OPTIONS).decode("utf-8")
        except TypeError:
            return _std_dumps(obj)

    def loads(data: str | bytes | bytearray) -> Any:
        """Parse a JSON document exactly as ``json.loads`` does (see the module docstring).

        Raises:
            ValueError: not JSON (``json.JSONDecodeError``), or bytes that are not UTF-8.
        """
        try:
            result = _orjson_loads(data)
        except _OrjsonDecodeError:
            return _std_loads(data)
        return _std_loads(data) if _maybe_big_int(result) else result

else:  # pragma: no cover - exercised only without orjson

    def dumps_bytes(obj: Any) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes."""
        return _std_dumps(obj).encode("utf-8")

    def dumps(obj: Any) -> str:
        """``obj`` as compact JSON text, non-ASCII characters as they are."""
        return _std_dumps(obj)

    def loads(data: str | bytes | bytearray) -> Any:
        """``json.loads``, with a too deeply nested document refused like any other bad one."""
        return _std_loads(data)
