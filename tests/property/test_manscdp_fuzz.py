"""Fuzzing the MANSCDP reader with h11's invariant: a message, or ManscdpError, nothing else."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ManscdpError
from gateway.gb28181.catalog import CatalogAssembler
from gateway.gb28181.manscdp import (
    CatalogItem,
    CatalogResponse,
    Keepalive,
    UnknownCommand,
    parse_gb_time,
    parse_manscdp,
    serialize,
    split_catalog,
)
from gateway.gb28181.manscdp.messages import ManscdpMessage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"
BODIES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.xml"))]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MESSAGE_TYPES = get_args(ManscdpMessage)


def _parses_or_manscdp_error(body: bytes) -> None:
    try:
        msg = parse_manscdp(body)
    except ManscdpError:
        return
    assert isinstance(msg, MESSAGE_TYPES)


def test_fixtures_exist() -> None:
    assert len(BODIES) >= 10


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes(body: bytes) -> None:
    _parses_or_manscdp_error(body)


@st.composite
def _mutated_fixture(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(BODIES)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"&",
                        b"<",
                        b">",
                        b"]]>",
                        b"\x00",
                        b"\xa1",
                        b"\xe8\x90\xb3",
                        b"<!DOCTYPE x>",
                        b"&lol;",
                        b"<Item>",
                        b"</Item>",
                        b"<Info>",
                        b"9" * 25,
                    ]
                )
            )
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = draw(st.sampled_from(BODIES))
            data[pos:pos] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


@FUZZ
@given(_mutated_fixture())
def test_mutated_fixture_bodies(body: bytes) -> None:
    _parses_or_manscdp_error(body)


TOKENS = [
    "<Query>",
    "</Query>",
    "<Notify>",
    "</Notify>",
    "<Response>",
    "</Response>",
    "<Control>",
    "<CmdType>",
    "</CmdType>",
    "Keepalive",
    "Catalog",
    "DeviceInfo",
    "DeviceStatus",
    "Alarm",
    "<SN>",
    "</SN>",
    "<DeviceID>",
    "</DeviceID>",
    "<SumNum>",
    "</SumNum>",
    '<DeviceList Num="1">',
    "</DeviceList>",
    "<Item>",
    "</Item>",
    "<Info>",
    "</Info>",
    "<Status>",
    "</Status>",
    "<Address>",
    "</Address>",
    '<Alarmstatus num="x">',
    "</Alarmstatus>",
    "<Longitude>",
    "</Longitude>",
    "<Port>",
    "</Port>",
    "<Event>",
    "OK",
    "ON",
    "-1",
    "0",
    "1795913124140",
    "1e999",
    "nan",
    "&",
    "&amp;",
    "&#0;",
    "<",
    ">",
    "'",
    '"',
    "和平区",
    "萳",
    "·",
    "\r\n",
    " ",
    "<?xml version='1.0' encoding='GB2312'?>",
    "<!ENTITY a 'b'>",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?pi x?>",
    "\x00",
    "\ufffd",
]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.sampled_from(["gb18030", "utf-8"]))
def test_token_soup(tokens: list[str], codec: str) -> None:
    _parses_or_manscdp_error("".join(tokens).encode(codec))


def test_every_truncation_of_every_fixture() -> None:
    for body in BODIES:
        for n in range(len(body) + 1):
            _parses_or_manscdp_error(body[:n])


# Text that survives XML 1.0 (no C0 controls except tab/LF/CR, no surrogates/FFFE/FFFF)
# and the reader's whitespace trimming.
_XML_CHAR = st.characters(
    exclude_categories=["Cs"],
    exclude_characters="\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16"
    "\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff",
)
_TEXT = st.text(_XML_CHAR, min_size=1, max_size=20).map(str.strip).filter(bool)
_OPT_TEXT = st.none() | _TEXT
_OPT_INT = st.none() | st.integers(-(10**9), 10**9)
_OPT_FLOAT = st.none() | st.floats(-180, 180, allow_nan=False, allow_infinity=False)

_ITEMS = st.builds(
    CatalogItem,
    device_id=_TEXT,
    name=_OPT_TEXT,
    manufacturer=_OPT_TEXT,
    address=_OPT_TEXT,
    parental=_OPT_INT,
    port=st.none() | st.integers(0, 65535),
    longitude=_OPT_FLOAT,
    latitude=_OPT_FLOAT,
    status=_OPT_TEXT,
    ptz_type=_OPT_INT,
    room_type=_OPT_INT,
    business_group_id=_OPT_TEXT,
    event=_OPT_TEXT,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**20 - 1),
    _TEXT,
    st.lists(_ITEMS, max_size=6),
    st.sampled_from(["GB2312", "UTF-8", "GBK"]),
)
def test_catalog_round_trip(sn: int, device_id: str, items: list[CatalogItem], charset: str) -> None:
    msg = CatalogResponse(sn, device_id, len(items), tuple(items))
    assert parse_manscdp(serialize(msg, charset)) == msg


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**20 - 1), _TEXT, _OPT_TEXT, st.lists(_TEXT, max_size=4), st.sampled_from(["GB2312", "UTF-8"]))
def test_keepalive_round_trip(sn: int, device_id: str, status: str | None, ids: list[str], charset: str) -> None:
    msg = Keepalive(sn, device_id, status, tuple(ids))
    assert parse_manscdp(serialize(msg, charset)) == msg


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=60, unique=True), st.integers(1, 9), st.randoms(use_true_random=False))
def test_assembler_completes_any_chunk_order(ids: list[int], per_message: int, rng: random.Random) -> None:
    items = [CatalogItem(f"{i:020d}") for i in ids]
    chunks = split_catalog(1, "34020000001110000001", items, per_message)
    rng.shuffle(chunks)
    assembler = CatalogAssembler()
    results = [assembler.add(chunk, now=float(t)) for t, chunk in enumerate(chunks)]
    assert all(r is None for r in results[:-1])
    done = results[-1]
    assert done is not None
    assert not done.partial
    assert sorted(i.device_id for i in done.items) == sorted(i.device_id for i in items)
    assert assembler.get_timer() is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_gb_time_raises_only_manscdp_error(text: str) -> None:
    with contextlib.suppress(ManscdpError):
        parse_gb_time(text)


def test_unknown_command_is_a_message_type() -> None:
    assert UnknownCommand in MESSAGE_TYPES
