"""``wslarkbot._json``: orjson's speed with the standard library's results."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any

import pytest

from wslarkbot import _json


def std(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


DOCS = [
    '{"encrypt":"' + "A" * 1200 + '","bench":{"s":1,"t":2}}',
    '{"a":[1,2.5,-0.0,1e16,1.5e-7,true,false,null],"b":{"c":"é\\u2028\\"\\\\</x>\\u0000"}}',
    '  {"a" : 1 }  ',
    '"\\ud83d\\ude00"',
    "[]",
    "123",
]


@pytest.mark.parametrize("doc", DOCS)
def test_loads_and_dumps_match_the_standard_library(doc: str) -> None:
    value = _json.loads(doc)
    assert value == json.loads(doc)
    assert _json.loads(doc.encode()) == json.loads(doc)
    assert json.loads(_json.dumps(value)) == value
    assert _json.dumps_bytes(value) == _json.dumps(value).encode()


@pytest.mark.parametrize(
    "doc",
    [
        '{"big":123456789012345678901234567890}',  # orjson would make it a float
        '{"neg":-18446744073709551616}',
        '{"nan":NaN,"inf":Infinity}',  # not JSON, but json.loads takes it
        '"\\ud800"',  # a lone surrogate
        '{"x":1e400}',
    ],
)
def test_loads_falls_back_to_the_standard_library_where_orjson_differs(doc: str) -> None:
    value = _json.loads(doc)
    expected = json.loads(doc)
    assert repr(value) == repr(expected)  # repr: nan != nan, and int vs float must match
    if "big" in doc or "neg" in doc:
        assert _json.dumps(value) == std(expected)


@pytest.mark.parametrize("doc", ["", "{", '{"a":}', "nul", b"\xff\xfe{}"])
def test_loads_raises_value_error_like_json(doc: str | bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(doc)
    with pytest.raises(ValueError):
        _json.loads(doc)


class Color(str, enum.Enum):
    RED = "red"


class Tag(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


def test_dumps_hands_what_orjson_encodes_differently_to_json() -> None:
    assert _json.dumps({1: "a", "b": 2}) == std({1: "a", "b": 2})  # non-str keys
    assert _json.dumps({"c": Color.RED, "t": Tag("x")}) == std({"c": Color.RED, "t": Tag("x")})
    assert _json.dumps(2**70) == std(2**70)
    assert _json.dumps((1, "é")) == std((1, "é"))
    for bad in (Point(1), datetime.date(2026, 1, 1), {1, 2}, object()):
        with pytest.raises(TypeError):
            json.dumps(bad)
        with pytest.raises(TypeError):
            _json.dumps(bad)
        with pytest.raises(TypeError):
            _json.dumps_bytes(bad)


def test_the_fast_path_is_used_when_orjson_is_installed() -> None:
    pytest.importorskip("orjson")
    assert _json.FAST


@pytest.mark.skipif(not _json.FAST, reason="orjson not installed")
def test_a_document_with_ordinary_floats_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One parse per document (issue 19): only an integral float of 2**63 or more, which orjson may have
    made of a huge integer, sends the document to the standard library again."""
    calls: list[object] = []
    real = _json._std_loads

    def counting(data: str | bytes | bytearray) -> object:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(_json, "_std_loads", counting)
    assert _json.loads('{"t":1.5,"s":[0.25,-3.0,2.5e-3]}') == {"t": 1.5, "s": [0.25, -3.0, 2.5e-3]}
    assert calls == []
    assert _json.loads('{"big":123456789012345678901234567890}') == {"big": 123456789012345678901234567890}
    assert len(calls) == 1
