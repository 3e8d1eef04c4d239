"""The RFC 8010 codec: known encodings, rejections, limits, properties, fuzzing, and ipptool.

The hand-built vectors spell out the wire format field by field (RFC 8010 §3.1, Appendix
A); the ipptool test proves that CUPS reads what we write and we read what it writes.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolvault.errors import ClientError
from spoolvault.ipp.codec import (
    Attribute,
    AttributeGroup,
    Collection,
    IppMessage,
    IppParseError,
    Limits,
    Parser,
    Range,
    Resolution,
    StringWithLanguage,
    Value,
    decode,
    encode,
)
from spoolvault.ipp.constants import (
    GroupTag,
    JobState,
    Operation,
    PrinterState,
    Status,
    ValueTag,
    operation_name,
    status_name,
    tag_name,
)

T = ValueTag
BAD = Status.CLIENT_ERROR_BAD_REQUEST
TOO_LARGE = Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE
TOO_LONG = Status.CLIENT_ERROR_REQUEST_VALUE_TOO_LONG


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def item(tag: int, name: bytes | str, value: bytes | str) -> bytes:
    """value-tag, name-length, name, value-length, value (RFC 8010 §3.1.4/§3.1.5)."""
    n = name.encode() if isinstance(name, str) else name
    v = value.encode() if isinstance(value, str) else value
    return bytes([tag]) + u16(len(n)) + n + u16(len(v)) + v


def header(op: int = 0x0002, request_id: int = 1, version: bytes = b"\x02\x00") -> bytes:
    return version + u16(op) + struct.pack(">i", request_id)


OP_ATTRS = (
    b"\x01"
    + item(0x47, "attributes-charset", "utf-8")
    + item(0x48, "attributes-natural-language", "en")
)


def message(*items: bytes, op: int = 0x0002, request_id: int = 1) -> bytes:
    """A Print-Job header, the operation group, then `items`, then end-of-attributes."""
    return header(op, request_id) + OP_ATTRS + b"".join(items) + b"\x03"


def expect_error(data: bytes, status: int = BAD, match: str = "", limits: Limits | None = None):
    with pytest.raises(IppParseError) as info:
        decode(data, limits or Limits())
    assert info.value.status == status, str(info.value)
    assert match in str(info.value)
    return info.value


# --------------------------------------------------------------------------- known encodings

# RFC 8010 Appendix A.1 "Print-Job Request", octet by octet.
RFC_PRINT_JOB = (
    b"\x01\x01"  # version-number 1.1
    b"\x00\x02"  # operation-id Print-Job
    b"\x00\x00\x00\x01"  # request-id 1
    b"\x01"  # operation-attributes-tag
    b"\x47\x00\x12attributes-charset\x00\x08us-ascii"
    b"\x48\x00\x1battributes-natural-language\x00\x05en-us"
    b"\x45\x00\x0bprinter-uri\x00\x2cipp://printer.example.com/ipp/print/pinetree"
    b"\x42\x00\x08job-name\x00\x06foobar"
    b"\x22\x00\x16ipp-attribute-fidelity\x00\x01\x01"
    b"\x02"  # job-attributes-tag
    b"\x21\x00\x06copies\x00\x04\x00\x00\x00\x14"
    b"\x44\x00\x05sides\x00\x13two-sided-long-edge"
    b"\x03"  # end-of-attributes-tag
)


def test_rfc8010_print_job_example() -> None:
    msg, offset = decode(RFC_PRINT_JOB + b"%!PS-Adobe-3.0")
    assert offset == len(RFC_PRINT_JOB)
    assert (msg.version, msg.code, msg.request_id) == ((1, 1), Operation.PRINT_JOB, 1)
    op = msg.operation
    assert [a.name for a in op] == [
        "attributes-charset",
        "attributes-natural-language",
        "printer-uri",
        "job-name",
        "ipp-attribute-fidelity",
    ]
    assert op.get("attributes-charset") == Attribute(
        "attributes-charset", [Value(T.CHARSET, "us-ascii")]
    )
    assert op.get("printer-uri").tag == T.URI  # type: ignore[union-attr]
    assert op.get("job-name").value == "foobar"  # type: ignore[union-attr]
    assert op.get("ipp-attribute-fidelity").value is True  # type: ignore[union-attr]
    job = msg.group(GroupTag.JOB)
    assert job is not None
    assert job.get("copies") == Attribute("copies", [Value(T.INTEGER, 20)])
    assert job.get("sides") == Attribute("sides", [Value(T.KEYWORD, "two-sided-long-edge")])
    assert encode(msg) == RFC_PRINT_JOB


# media-col = { media-size = { x-dimension = 21590, y-dimension = 27940 },
#               media-color = "blue", media-type = "stationery", "cardstock" }
MEDIA_COL = (
    b"\x34\x00\x09media-col\x00\x00"  # begCollection, named, empty value
    b"\x4a\x00\x00\x00\x0amedia-size"  # memberAttrName "media-size"
    b"\x34\x00\x00\x00\x00"  # its value: a nested begCollection
    b"\x4a\x00\x00\x00\x0bx-dimension"
    b"\x21\x00\x00\x00\x04\x00\x00\x54\x56"  # integer 21590, name-length 0
    b"\x4a\x00\x00\x00\x0by-dimension"
    b"\x21\x00\x00\x00\x04\x00\x00\x6d\x24"  # integer 27940
    b"\x37\x00\x00\x00\x00"  # endCollection (media-size)
    b"\x4a\x00\x00\x00\x0bmedia-color"
    b"\x44\x00\x00\x00\x04blue"
    b"\x4a\x00\x00\x00\x0amedia-type"
    b"\x44\x00\x00\x00\x0astationery"
    b"\x44\x00\x00\x00\x09cardstock"  # a second value of the same member (1setOf)
    b"\x37\x00\x00\x00\x00"  # endCollection (media-col)
)


def test_collection_with_nested_collection() -> None:
    data = message(b"\x02" + MEDIA_COL)
    msg, _ = decode(data)
    media_col = msg.group(GroupTag.JOB).get("media-col")  # type: ignore[union-attr]
    assert media_col is not None and media_col.tag == T.BEGIN_COLLECTION
    col = media_col.value
    assert isinstance(col, Collection)
    size = col.get("media-size")
    assert size is not None and isinstance(size.value, Collection)
    assert size.value.get("x-dimension") == Attribute("x-dimension", [Value(T.INTEGER, 21590)])
    assert size.value.get("y-dimension").value == 27940  # type: ignore[union-attr]
    assert col.get("media-color").python_values == ["blue"]  # type: ignore[union-attr]
    assert col.get("media-type").python_values == ["stationery", "cardstock"]  # type: ignore[union-attr]
    assert "media-color" in col and "media-weight" not in col
    assert encode(msg) == data

    built = IppMessage((2, 0), Operation.PRINT_JOB, 1)
    built.operation.add("attributes-charset", T.CHARSET, "utf-8")
    built.operation.add("attributes-natural-language", T.NATURAL_LANGUAGE, "en")
    inner = Collection()
    inner.add("x-dimension", T.INTEGER, 21590)
    inner.add("y-dimension", T.INTEGER, 27940)
    built.add_group(GroupTag.JOB).add(
        "media-col",
        T.BEGIN_COLLECTION,
        [
            Attribute("media-size", [Value(T.BEGIN_COLLECTION, inner)]),
            Attribute("media-color", [Value(T.KEYWORD, "blue")]),
            Attribute(
                "media-type", [Value(T.KEYWORD, "stationery"), Value(T.KEYWORD, "cardstock")]
            ),
        ],
    )
    assert built == msg
    assert encode(built) == data


def test_1setof_collections_use_zero_name_length() -> None:
    data = message(
        b"\x02"
        + item(0x34, "media-col-database", b"")
        + item(0x4A, b"", "media-key")
        + item(0x44, b"", "a4")
        + b"\x37\x00\x00\x00\x00"
        + item(0x34, b"", b"")  # second collection value of the same attribute
        + item(0x4A, b"", "media-key")
        + item(0x44, b"", "letter")
        + b"\x37\x00\x00\x00\x00"
        + item(0x34, b"", b"")  # an empty collection is valid
        + b"\x37\x00\x00\x00\x00"
    )
    msg, _ = decode(data)
    db = msg.group(GroupTag.JOB).get("media-col-database")  # type: ignore[union-attr]
    assert db is not None and len(db.values) == 3
    assert [c.get("media-key").value for c in db.python_values[:2]] == ["a4", "letter"]  # type: ignore[union-attr]
    assert db.values[2].value == Collection()
    assert encode(msg) == data


@pytest.mark.parametrize(
    ("tag", "raw", "expected"),
    [
        (T.INTEGER, b"\xff\xff\xff\xfe", -2),
        (T.ENUM, b"\x00\x00\x00\x05", 5),
        (T.BOOLEAN, b"\x00", False),
        (T.RESOLUTION, b"\x00\x00\x02\x58\x00\x00\x01\x2c\x03", Resolution(600, 300, 3)),
        (T.RANGE_OF_INTEGER, b"\x00\x00\x00\x01\x00\x00\x00\x05", Range(1, 5)),
        (T.TEXT_WITH_LANGUAGE, b"\x00\x02fr\x00\x07Bonjour", StringWithLanguage("fr", "Bonjour")),
        (
            T.NAME_WITH_LANGUAGE,
            b"\x00\x05de-CH\x00\x07Gr\xc3\xbc\xc3\x9fe",
            StringWithLanguage("de-CH", "Grüße"),
        ),
        (T.TEXT_WITH_LANGUAGE, b"\x00\x00\x00\x00", StringWithLanguage("", "")),
        (T.TEXT, "Ünïcødé ✓".encode(), "Ünïcødé ✓"),
        (T.NAME, b"alice", "alice"),
        (T.URI, b"ipp://h/ipp/print", "ipp://h/ipp/print"),
        (T.MIME_MEDIA_TYPE, b"application/pdf", "application/pdf"),
        (T.OCTET_STRING, b"\x00\xff\x10", b"\x00\xff\x10"),
        (T.UNKNOWN, b"", None),
        (T.NO_VALUE, b"", None),
        (T.UNSUPPORTED, b"", None),
        (T.NOT_SETTABLE, b"", None),
        (T.DELETE_ATTRIBUTE, b"", None),
        (T.ADMIN_DEFINE, b"", None),
        (T.DEFAULT, b"", None),
        (0x14, b"", None),  # unassigned out-of-band tag: still no value
        (T.EXTENSION, b"\x40\x00\x00\x01\xca\xfe", b"\x40\x00\x00\x01\xca\xfe"),
        (0x50, b"opaque", b"opaque"),  # unassigned character-string-range tag
        (0x24, b"\x01\x02", b"\x01\x02"),  # unassigned integer-range tag
    ],
)
def test_value_encodings(tag: int, raw: bytes, expected: object) -> None:
    data = message(b"\x02" + item(tag, "x-attr", raw))
    msg, _ = decode(data)
    attr = msg.group(GroupTag.JOB).get("x-attr")  # type: ignore[union-attr]
    assert attr is not None
    assert attr.tag == tag
    assert attr.value == expected
    assert type(attr.value) is type(expected)
    assert encode(msg) == data


def test_datetime_is_exact_including_utc_offset() -> None:
    # RFC 2579: 2024-03-05 10:20:30.5, 5 hours west of UTC.
    raw = b"\x07\xe8\x03\x05\x0a\x14\x1e\x05-\x05\x00"
    data = message(b"\x02" + item(T.DATETIME, "job-hold-until-time", raw))
    msg, _ = decode(data)
    value = msg.group(GroupTag.JOB).get("job-hold-until-time").value  # type: ignore[union-attr]
    assert isinstance(value, datetime)
    assert value == datetime(2024, 3, 5, 10, 20, 30, 500_000, timezone(timedelta(hours=-5)))
    assert value.utcoffset() == timedelta(hours=-5)
    assert encode(msg) == data
    east = datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=45)))
    out = IppMessage((2, 0), 0, 1)
    out.add_group(GroupTag.JOB).add("t", T.DATETIME, east)
    assert encode(out)[9 + 6 :][:11] == b"\x07\xcf\x0c\x1f\x17\x3b\x3b\x00+\x05\x2d"
    assert decode(encode(out))[0] == out


def test_additional_values_and_mixed_1setof() -> None:
    data = message(
        b"\x02"
        + item(T.INTEGER, "copies-supported", b"\x00\x00\x00\x01")
        + item(T.RANGE_OF_INTEGER, b"", b"\x00\x00\x00\x01\x00\x00\x03\xe7")
        + item(T.KEYWORD, "sides", "one-sided")
        + item(T.NO_VALUE, b"", b"")
    )
    msg, _ = decode(data)
    job = msg.group(GroupTag.JOB)
    assert job is not None
    assert job.get("copies-supported").values == [  # type: ignore[union-attr]
        Value(T.INTEGER, 1),
        Value(T.RANGE_OF_INTEGER, Range(1, 999)),
    ]
    assert job.get("sides").python_values == ["one-sided", None]  # type: ignore[union-attr]
    assert encode(msg) == data


def test_groups_repeat_and_may_be_empty() -> None:
    # Get-Jobs: one job group per job; an empty group is legal.
    data = (
        header(0x0000, 7)
        + OP_ATTRS
        + b"\x02"
        + item(T.INTEGER, "job-id", b"\x00\x00\x00\x01")
        + b"\x02"
        + item(T.INTEGER, "job-id", b"\x00\x00\x00\x02")
        + b"\x02\x04\x0a"
        + b"\x03"
    )
    msg, _ = decode(data)
    assert [g.tag for g in msg.groups] == [1, 2, 2, 2, 4, 10]
    assert [g.get("job-id").value for g in msg.groups_of(GroupTag.JOB)[:2]] == [1, 2]  # type: ignore[union-attr]
    assert msg.groups_of(GroupTag.JOB)[2].attributes == []
    assert msg.group(GroupTag.SUBSCRIPTION) is None
    assert encode(msg) == data


def test_request_id_zero_and_odd_versions_are_left_to_the_server() -> None:
    msg, _ = decode(header(0x000B, 0, b"\x00\x09") + b"\x03")
    assert (msg.version, msg.code, msg.request_id, msg.groups) == ((0, 9), 0x000B, 0, [])
    msg, _ = decode(header(0x000B, -5) + b"\x03")
    assert msg.request_id == -5  # SIGNED-INTEGER on the wire, as CUPS reads it


def test_lenient_where_cups_is() -> None:
    # Out-of-band values should be empty (Brother sends text): the content is dropped.
    data = message(b"\x02" + item(T.UNKNOWN, "printer-info", "junk"))
    msg, _ = decode(data)
    assert msg.group(GroupTag.JOB).get("printer-info").values == [Value(T.UNKNOWN, None)]  # type: ignore[union-attr]
    assert encode(msg) == message(b"\x02" + item(T.UNKNOWN, "printer-info", b""))
    # RFC 3382 reserved the begCollection value; we ignore it (and always send it empty).
    data = message(b"\x02" + item(T.BEGIN_COLLECTION, "c", "reserved") + b"\x37\x00\x00\x00\x00")
    msg, _ = decode(data)
    assert msg.group(GroupTag.JOB).get("c").value == Collection()  # type: ignore[union-attr]


def test_response_builder() -> None:
    request, _ = decode(
        header(0x000B, 99, b"\x01\x01")
        + b"\x01"
        + item(T.CHARSET, "attributes-charset", "utf-8")
        + item(T.NATURAL_LANGUAGE, "attributes-natural-language", "fr-ca")
        + b"\x03"
    )
    resp = IppMessage.response(request, Status.CLIENT_ERROR_NOT_FOUND, "no such printer")
    # The message is English, so the response says en, not the fr-ca asked for.
    assert encode(resp) == (
        b"\x01\x01\x04\x06\x00\x00\x00\x63\x01"
        + item(T.CHARSET, "attributes-charset", "utf-8")
        + item(T.NATURAL_LANGUAGE, "attributes-natural-language", "en")
        + item(T.TEXT, "status-message", "no such printer")
        + b"\x03"
    )
    request.operation.set("attributes-natural-language", T.NATURAL_LANGUAGE, "en-GB")
    british = IppMessage.response(request, Status.SUCCESSFUL_OK)
    assert british.operation.get("attributes-natural-language").value == "en-GB"  # type: ignore[union-attr]
    bare = IppMessage.response(IppMessage((2, 0), 2, 5), Status.SUCCESSFUL_OK)
    assert [(a.name, a.value) for a in bare.operation] == [
        ("attributes-charset", "utf-8"),
        ("attributes-natural-language", "en"),
    ]
    assert (bare.version, bare.request_id, bare.code) == ((2, 0), 5, 0)


def test_model_helpers() -> None:
    msg = IppMessage((2, 0), Operation.GET_JOBS, 3)
    job = msg.add_group(GroupTag.JOB)
    assert msg.operation is msg.groups[0]  # created, first
    assert msg.operation is msg.groups[0]  # and found afterwards
    job.add("a", T.KEYWORD, "x", "y")
    job.add("b", T.NO_VALUE)
    job.add("a", T.INTEGER, 1)
    assert job.get("b") == Attribute("b", [Value(T.NO_VALUE, None)])
    assert job.get("a").python_values == ["x", "y"]  # type: ignore[union-attr]
    job.set("a", T.ENUM, 4)
    assert [(a.name, a.tag, a.python_values) for a in job] == [
        ("a", T.ENUM, [4]),
        ("b", T.NO_VALUE, [None]),
    ]
    job.set("c", T.BOOLEAN, True)
    assert "c" in job and job.remove("c") and not job.remove("c")
    mixed = job.add("m", T.INTEGER, 1, Value(T.RANGE_OF_INTEGER, Range(2, 3)))
    assert [v.tag for v in mixed.values] == [T.INTEGER, T.RANGE_OF_INTEGER]
    with pytest.raises(ValueError, match="no values"):
        _ = Attribute("empty", []).tag
    assert Operation.PRINT_JOB.ipp_name == "Print-Job"
    assert Operation.CUPS_GET_PPDS.ipp_name == "CUPS-Get-PPDs"
    assert operation_name(0x0003) == "Print-URI"
    assert operation_name(0x7777) == "0x7777"
    assert (
        Status.CLIENT_ERROR_REQUEST_VALUE_TOO_LONG.keyword == "client-error-request-value-too-long"
    )
    assert status_name(0x0508) == "server-error-job-canceled"
    assert status_name(0x0999) == "0x0999"
    assert Status.SUCCESSFUL_OK_CONFLICTING_ATTRIBUTES.is_successful
    assert not Status.SERVER_ERROR_BUSY.is_successful
    assert tag_name(T.TEXT_WITH_LANGUAGE) == "textWithLanguage"
    assert tag_name(0x5F) == "0x5f"
    assert int(JobState.PENDING_HELD) == 4 and int(PrinterState.STOPPED) == 5
    assert len({int(op) for op in Operation}) == len(Operation)


def test_ipp_parse_error_carries_the_header() -> None:
    err = expect_error(header(0x0002, 4242, b"\x01\x01") + b"\x01" + item(T.INTEGER, "n", b"\x00"))
    assert isinstance(err, ClientError)
    assert (err.request_id, err.version) == (4242, (1, 1))
    early = expect_error(b"\x02\x00\x00")
    assert (early.request_id, early.version) == (0, (2, 0))


# --------------------------------------------------------------------------- rejections

REJECTIONS = [
    (
        "additional value first in a group",
        message(b"\x02" + item(T.KEYWORD, b"", "x")),
        "name-length 0",
    ),
    (
        "attribute before any group",
        header() + item(T.KEYWORD, "a", "x") + b"\x03",
        "precedes any group",
    ),
    (
        "integer of 3 octets",
        message(b"\x02" + item(T.INTEGER, "copies", b"\x00\x00\x01")),
        "'copies'",
    ),
    ("enum of 5 octets", message(b"\x02" + item(T.ENUM, "e", b"\x00" * 5)), "length 5, not 4"),
    ("boolean of 2 octets", message(b"\x02" + item(T.BOOLEAN, "b", b"\x00\x01")), "boolean"),
    ("boolean 2", message(b"\x02" + item(T.BOOLEAN, "b", b"\x02")), "neither 0 nor 1"),
    ("dateTime of 10 octets", message(b"\x02" + item(T.DATETIME, "d", b"\x00" * 10)), "dateTime"),
    ("resolution of 8", message(b"\x02" + item(T.RESOLUTION, "r", b"\x00" * 8)), "resolution"),
    ("range of 7", message(b"\x02" + item(T.RANGE_OF_INTEGER, "r", b"\x00" * 7)), "rangeOfInteger"),
    (
        "textWithLanguage < 4",
        message(b"\x02" + item(T.TEXT_WITH_LANGUAGE, "t", b"\x00\x00\x00")),
        "at least 4",
    ),
    (
        "language overflows",
        message(b"\x02" + item(T.TEXT_WITH_LANGUAGE, "t", b"\x00\x09en\x00\x00")),
        "overflows",
    ),
    (
        "inner lengths do not add up",
        message(b"\x02" + item(T.NAME_WITH_LANGUAGE, "t", b"\x00\x02en\x00\x01ab")),
        "do not add up",
    ),
    ("text not UTF-8", message(b"\x02" + item(T.TEXT, "job-name", b"ok\xff")), "job-name' at byte"),
    ("name not UTF-8", message(b"\x02" + item(T.TEXT, b"na\xc3me", b"x")), "attribute name"),
    (
        "NUL in a name value",
        message(b"\x02" + item(T.NAME, "requesting-user-name", b"root\x00x")),
        "NUL",
    ),
    (
        "memberAttrName outside",
        message(b"\x02" + item(T.MEMBER_NAME, b"", "x")),
        "outside a collection",
    ),
    ("endCollection outside", message(b"\x02" + b"\x37\x00\x00\x00\x00"), "outside a collection"),
    (
        "named member",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.INTEGER, "x", b"\x00" * 4)),
        "memberAttrName",
    ),
    (
        "value before memberAttrName",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.INTEGER, b"", b"\x00" * 4)),
        "no collection member",
    ),
    (
        "unterminated collection",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "media-col", b"")),
        "'media-col'",
    ),
    (
        "group tag inside a collection",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + b"\x04"),
        "missing endCollection",
    ),
    (
        "member without value",
        message(
            b"\x02"
            + item(T.BEGIN_COLLECTION, "c", b"")
            + item(T.MEMBER_NAME, b"", "m")
            + b"\x37\x00\x00\x00\x00"
        ),
        "'c/m' has no value",
    ),
    (
        "member without value, then another",
        message(
            b"\x02"
            + item(T.BEGIN_COLLECTION, "c", b"")
            + item(T.MEMBER_NAME, b"", "m")
            + item(T.MEMBER_NAME, b"", "n")
        ),
        "has no value",
    ),
    (
        "memberAttrName with a name",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.MEMBER_NAME, "x", "m")),
        "name-length 0",
    ),
    (
        "empty memberAttrName",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.MEMBER_NAME, b"", b"")),
        "empty",
    ),
    (
        "endCollection with a value",
        message(b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.END_COLLECTION, b"", b"x")),
        "empty name and value",
    ),
    ("second operation group", message(b"\x02\x01"), "not the first group"),
    ("delimiter 0x00", message(b"\x00"), "0x00"),
    ("short extension", message(b"\x02" + item(T.EXTENSION, "x", b"\x00\x00\x01")), "31-bit"),
    (
        "extension type > 0x7FFFFFFF",
        message(b"\x02" + item(T.EXTENSION, "x", b"\x80\x00\x00\x01")),
        "31-bit",
    ),
    (
        "month 13",
        message(b"\x02" + item(T.DATETIME, "d", b"\x07\xe8\x0d\x01\x00\x00\x00\x00+\x00\x00")),
        "dateTime",
    ),
    (
        "leap second",
        message(b"\x02" + item(T.DATETIME, "d", b"\x07\xe8\x0c\x1f\x17\x3b\x3c\x00+\x00\x00")),
        "dateTime",
    ),
    (
        "bad direction",
        message(b"\x02" + item(T.DATETIME, "d", b"\x07\xe8\x01\x01\x00\x00\x00\x00x\x00\x00")),
        "dateTime",
    ),
    (
        "deci-seconds 10",
        message(b"\x02" + item(T.DATETIME, "d", b"\x07\xe8\x01\x01\x00\x00\x00\x0a+\x00\x00")),
        "dateTime",
    ),
]


@pytest.mark.parametrize(
    ("data", "match"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_malformed_is_bad_request(data: bytes, match: str) -> None:
    expect_error(data, BAD, match)
    parser = Parser()
    with pytest.raises(IppParseError) as info:
        for i in range(len(data)):  # byte by byte: same verdict
            parser.feed(data[i : i + 1])
        parser.finish()
    assert info.value.status == BAD and match in str(info.value)
    with pytest.raises(IppParseError):  # the error sticks
        parser.feed(b"\x03")
    with pytest.raises(IppParseError):
        parser.finish()


@pytest.mark.parametrize("cut", [0, 3, 7, 8, 9, 20, len(RFC_PRINT_JOB) - 1])
def test_truncation(cut: int) -> None:
    expect_error(RFC_PRINT_JOB[:cut], BAD, "truncated" if cut else "empty")
    parser = Parser()
    assert parser.feed(RFC_PRINT_JOB[:cut]) is None
    with pytest.raises(IppParseError, match="truncated" if cut else "empty"):
        parser.finish()


def test_parser_protocol() -> None:
    parser = Parser()
    assert parser.feed(b"") is None
    assert parser.feed(memoryview(RFC_PRINT_JOB[:50])) is None
    msg = parser.feed(bytearray(RFC_PRINT_JOB[50:] + b"%!PS"))
    assert msg is not None and parser.message is msg
    assert parser.rest == b"%!PS"
    parser.finish()  # fine once complete
    with pytest.raises(RuntimeError):
        parser.feed(b"more document data")


# --------------------------------------------------------------------------- limits


def test_limit_header_bytes() -> None:
    big = message(b"\x02" + item(T.TEXT, "t", "x" * 30000) * 40)  # ~1.2 MB
    expect_error(big, TOO_LARGE, "exceeds 1048576 bytes")
    # Fed in pieces without an end tag: refused as soon as the limit is crossed.
    limits = Limits(max_header_bytes=4096)
    parser = Parser(limits)
    stream = header() + OP_ATTRS + b"\x02" + item(T.TEXT, "t", "x" * 1000) * 10
    with pytest.raises(IppParseError) as info:
        for i in range(0, len(stream), 100):
            parser.feed(stream[i : i + 100])
    assert info.value.status == TOO_LARGE
    assert i < 4200
    # A message of exactly the limit is fine, one byte more is not.
    exact = message()
    decode(exact, Limits(max_header_bytes=len(exact)))
    expect_error(exact, TOO_LARGE, limits=Limits(max_header_bytes=len(exact) - 1))
    assert Parser(Limits(max_header_bytes=len(exact))).feed(exact + b"doc") is not None
    with pytest.raises(IppParseError):
        Parser(Limits(max_header_bytes=len(exact) - 1)).feed(exact)


def test_limit_counts_and_depth() -> None:
    many = message(b"\x02" + b"".join(item(T.INTEGER, f"a{i}", b"\x00" * 4) for i in range(30)))
    decode(many, Limits(max_attributes=32))
    expect_error(many, TOO_LARGE, "more than 31 attributes", Limits(max_attributes=31))
    values = message(
        b"\x02" + item(T.INTEGER, "a", b"\x00" * 4) + item(T.INTEGER, b"", b"\x00" * 4) * 9
    )
    decode(values, Limits(max_values=10))
    expect_error(values, TOO_LARGE, "more than 9 values", Limits(max_values=9))
    groups = message(b"\x02" * 20)
    decode(groups, Limits(max_groups=21))
    expect_error(groups, TOO_LARGE, "more than 20 attribute groups", Limits(max_groups=20))

    def nested(depth: int) -> bytes:
        inner = item(T.MEMBER_NAME, b"", "leaf") + item(T.INTEGER, b"", b"\x00" * 4)
        for _ in range(depth - 1):
            inner = (
                item(T.MEMBER_NAME, b"", "c")
                + item(T.BEGIN_COLLECTION, b"", b"")
                + inner
                + b"\x37\x00\x00\x00\x00"
            )
        return message(
            b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + inner + b"\x37\x00\x00\x00\x00"
        )

    decode(nested(16))
    expect_error(nested(17), TOO_LARGE, "nests deeper than 16")
    expect_error(nested(500), TOO_LARGE, "nests deeper than 16")


def test_collection_members_count_as_attributes() -> None:
    member = item(T.MEMBER_NAME, b"", "m") + item(T.INTEGER, b"", b"\x00" * 4)
    data = message(
        b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + member * 5 + b"\x37\x00\x00\x00\x00"
    )
    decode(data, Limits(max_attributes=8))  # 2 operation attributes, "c", 5 members
    expect_error(data, TOO_LARGE, "more than 7 attributes", Limits(max_attributes=7))


def test_parser_limit_crossed_inside_an_item_header() -> None:
    stream = header() + OP_ATTRS + b"\x02\x44\x00"  # 2 octets of the next item
    with pytest.raises(IppParseError) as info:
        Parser(Limits(max_header_bytes=len(stream))).feed(stream)
    assert info.value.status == TOO_LARGE
    assert Parser(Limits(max_header_bytes=len(stream) + 1)).feed(stream) is None


def test_limit_lengths() -> None:
    long_name = message(b"\x02" + item(T.KEYWORD, "n" * 256, "x"))
    expect_error(long_name, TOO_LONG, "name of 256 octets")
    decode(message(b"\x02" + item(T.KEYWORD, "n" * 255, "x")))
    long_member = message(
        b"\x02" + item(T.BEGIN_COLLECTION, "c", b"") + item(T.MEMBER_NAME, b"", "m" * 256)
    )
    expect_error(long_member, TOO_LONG, "member name of 256")
    value = message(b"\x02" + item(T.TEXT, "job-name", "v" * 2000))
    decode(value)
    err = expect_error(value, TOO_LONG, "'job-name'", Limits(max_value_length=1999))
    assert "2000 octets" in str(err)
    # The wire allows 65535 but RFC 8010 lengths are SIGNED-SHORT.
    expect_error(message(b"\x02" + item(T.OCTET_STRING, "o", b"\x00" * 32768)), TOO_LONG)
    with pytest.raises(ValueError):
        Limits(max_depth=0)


# --------------------------------------------------------------------------- encoder refusals


@pytest.mark.parametrize(
    ("tag", "value", "error"),
    [
        (T.INTEGER, True, TypeError),
        (T.INTEGER, "1", TypeError),
        (T.INTEGER, 1 << 31, ValueError),
        (T.ENUM, -(1 << 31) - 1, ValueError),
        (T.BOOLEAN, 1, TypeError),
        (T.DATETIME, datetime(2024, 1, 1), ValueError),  # naive
        (T.DATETIME, datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30))), ValueError),
        (T.DATETIME, "2024-01-01T00:00:00Z", TypeError),
        (T.RESOLUTION, (600, 600, 3), TypeError),
        (T.RESOLUTION, Resolution(1, 1, 256), ValueError),
        (T.RANGE_OF_INTEGER, (1, 2), TypeError),
        (T.TEXT, b"bytes", TypeError),
        (T.TEXT, "x" * 32768, ValueError),
        (T.TEXT_WITH_LANGUAGE, "plain", TypeError),
        (T.NO_VALUE, "", TypeError),
        (T.BEGIN_COLLECTION, {"a": 1}, TypeError),
        (T.END_COLLECTION, None, ValueError),
        (T.MEMBER_NAME, "x", ValueError),
        (T.OCTET_STRING, "str", TypeError),
        (T.EXTENSION, b"\x00\x01", ValueError),
        (0x100, b"", ValueError),
    ],
)
def test_encode_refuses_bad_values(tag: int, value: object, error: type[Exception]) -> None:
    msg = IppMessage((2, 0), 2, 1)
    msg.add_group(GroupTag.JOB).add("x", tag, value)
    with pytest.raises(error):
        encode(msg)


def test_encode_refuses_bad_structure() -> None:
    for build in (
        lambda m: m.add_group(GroupTag.JOB).attributes.append(Attribute("empty", [])),
        lambda m: m.add_group(GroupTag.JOB).add("", T.KEYWORD, "x"),
        lambda m: m.add_group(GroupTag.JOB).add("n" * 32768, T.KEYWORD, "x"),
        lambda m: m.add_group(GroupTag.END),
        lambda m: m.add_group(0x10),
        lambda m: (m.add_group(GroupTag.JOB), m.add_group(GroupTag.OPERATION)),
        lambda m: m.add_group(GroupTag.JOB).add(
            "c", T.BEGIN_COLLECTION, [Attribute("", [Value(T.INTEGER, 1)])]
        ),
    ):
        msg = IppMessage((2, 0), 2, 1)
        build(msg)
        with pytest.raises(ValueError):
            encode(msg)
    for bad in (
        IppMessage((256, 0), 2, 1),
        IppMessage((2, 0), 0x10000, 1),
        IppMessage((2, 0), 2, 1 << 31),
    ):
        with pytest.raises(ValueError):
            encode(bad)


# --------------------------------------------------------------------------- properties

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24)
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
DATETIMES = st.datetimes(timezones=OFFSETS).map(
    lambda d: d.replace(microsecond=d.microsecond // 100_000 * 100_000)
)
OUT_OF_BAND = st.sampled_from([0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x1F])
UNASSIGNED = st.sampled_from(
    [0x20, 0x24, 0x2F, 0x38, 0x40, 0x43, 0x4B, 0x5F, 0x60, 0x7E, 0x80, 0xFF]
)
STRING_TAGS = st.sampled_from(
    [
        T.TEXT,
        T.NAME,
        T.KEYWORD,
        T.URI,
        T.URI_SCHEME,
        T.CHARSET,
        T.NATURAL_LANGUAGE,
        T.MIME_MEDIA_TYPE,
    ]
)

LEAF_VALUES = st.one_of(
    st.builds(Value, st.sampled_from([T.INTEGER, T.ENUM]), INT32),
    st.builds(Value, st.just(T.BOOLEAN), st.booleans()),
    st.builds(Value, st.just(T.DATETIME), DATETIMES),
    st.builds(
        Value, st.just(T.RESOLUTION), st.builds(Resolution, INT32, INT32, st.integers(0, 255))
    ),
    st.builds(Value, st.just(T.RANGE_OF_INTEGER), st.builds(Range, INT32, INT32)),
    st.builds(
        Value,
        st.sampled_from([T.TEXT_WITH_LANGUAGE, T.NAME_WITH_LANGUAGE]),
        st.builds(StringWithLanguage, TEXT, TEXT),
    ),
    st.builds(Value, STRING_TAGS, TEXT),
    st.builds(Value, st.just(T.OCTET_STRING), st.binary(max_size=24)),
    st.builds(Value, OUT_OF_BAND, st.none()),
    st.builds(Value, UNASSIGNED, st.binary(max_size=12)),
    st.builds(
        Value,
        st.just(T.EXTENSION),
        st.builds(
            lambda t, b: struct.pack(">I", t) + b, st.integers(0, 0x7FFFFFFF), st.binary(max_size=8)
        ),
    ),
)


def _collections(children: st.SearchStrategy[Value]) -> st.SearchStrategy[Value]:
    members = st.builds(Attribute, NAMES, st.lists(children, min_size=1, max_size=3))
    return st.builds(
        Value, st.just(T.BEGIN_COLLECTION), st.builds(Collection, st.lists(members, max_size=4))
    )


VALUES = st.recursive(
    LEAF_VALUES, lambda children: st.one_of(children, _collections(children)), max_leaves=12
)
ATTRIBUTES = st.builds(Attribute, NAMES, st.lists(VALUES, min_size=1, max_size=4))
GROUP_TAGS = st.sampled_from([t for t in range(1, 16) if t != 3])


def _fix_operation_groups(groups: list[AttributeGroup]) -> list[AttributeGroup]:
    # RFC 8011 §4.1.3: only the first group may be (and usually is) the operation group.
    for group in groups[1:]:
        if group.tag == GroupTag.OPERATION:
            group.tag = GroupTag.JOB
    return groups


MESSAGES = st.builds(
    IppMessage,
    st.tuples(st.integers(0, 255), st.integers(0, 255)),
    st.integers(0, 0xFFFF),
    INT32,
    st.lists(
        st.builds(AttributeGroup, GROUP_TAGS, st.lists(ATTRIBUTES, max_size=5)), max_size=4
    ).map(_fix_operation_groups),
)
DEEP = Limits(max_depth=64)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(MESSAGES, st.binary(max_size=40))
def test_roundtrip(msg: IppMessage, document: bytes) -> None:
    data = encode(msg)
    decoded, offset = decode(data + document, DEEP)
    assert decoded == msg
    assert offset == len(data)
    assert encode(decoded) == data


@FAST
@given(MESSAGES, st.binary(max_size=40), st.data())
def test_parser_in_random_pieces(msg: IppMessage, document: bytes, data: st.DataObject) -> None:
    body = encode(msg)
    stream = body + document
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    parser = Parser(DEEP)
    fed = 0
    for piece in pieces:
        fed += len(piece)
        result = parser.feed(piece)
        if result is not None:
            assert result == msg
            assert fed >= len(body)
            assert parser.rest == stream[len(body) : fed]
            break
        assert fed < len(body)
    else:
        pytest.fail("the parser never completed the message")


# --------------------------------------------------------------------------- fuzzing


def _outcome(run: Callable[[], IppMessage | None]) -> tuple[str, object]:
    try:
        return "ok", run()
    except IppParseError as exc:
        return "error", exc.status


def _via_parser(data: bytes, pieces: list[int]) -> IppMessage | None:
    parser = Parser()
    pos = 0
    for size in [*pieces, len(data)]:
        msg = parser.feed(data[pos : pos + size])
        pos += size
        if msg is not None:
            return msg
    parser.finish()
    raise AssertionError("finish() returned without a message")


def _check_any_input(data: bytes, pieces: list[int]) -> None:
    whole = _outcome(lambda: decode(data)[0])
    split = _outcome(lambda: _via_parser(data, pieces))
    assert whole == split  # same message, or the same status
    if whole[0] == "ok":
        msg = whole[1]
        assert isinstance(msg, IppMessage)
        assert decode(encode(msg))[0] == msg  # whatever we accept, we can write back


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 40), max_size=8))
def test_fuzz_random_bytes(data: bytes, pieces: list[int]) -> None:
    _check_any_input(data, pieces)
    _check_any_input(header() + b"\x02" + data, pieces)  # get past the header


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "set"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, extra in mutations:
        at = where % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= 1 << (extra[0] % 8)
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = extra
        elif kind == "delete":
            del out[at : at + len(extra)]
        elif kind == "set" and out:
            out[at % len(out)] = extra[0]
    return bytes(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES, MUTATIONS, st.lists(st.integers(0, 40), max_size=8))
def test_fuzz_mutated_messages(
    msg: IppMessage, mutations: list[tuple[str, int, bytes]], pieces: list[int]
) -> None:
    _check_any_input(_mutate(encode(msg), mutations), pieces)


def test_fuzz_mutations_of_known_vectors() -> None:
    rng = random.Random(8010)
    seeds = [RFC_PRINT_JOB, message(b"\x02" + MEDIA_COL), *(r[1] for r in REJECTIONS)]
    deadline = time.monotonic() + 3
    count = 0
    while time.monotonic() < deadline and count < 20000:
        seed = rng.choice(seeds)
        mutations = [
            (
                rng.choice(["flip", "truncate", "insert", "delete", "set"]),
                rng.randrange(1 << 16),
                rng.randbytes(rng.randint(1, 4)),
            )
            for _ in range(rng.randint(1, 3))
        ]
        _check_any_input(
            _mutate(seed, mutations), [rng.randint(0, 30) for _ in range(rng.randint(0, 5))]
        )
        count += 1
    assert count > 1000


def test_worst_case_input_is_linear() -> None:
    # 1 MiB of one-byte additional values fed one small piece at a time must stay fast.
    stream = message(
        b"\x02" + item(T.INTEGER, "a", b"\x00" * 4) + item(T.INTEGER, b"", b"\x00" * 4) * 999
    )
    started = time.monotonic()
    parser = Parser()
    result = None
    for i in range(0, len(stream), 7):
        result = parser.feed(stream[i : i + 7])
    assert result is not None and len(result.groups[1].attributes[0].values) == 1000
    empty_groups = header() + b"\x02" * 63 + b"\x03"
    decode(empty_groups)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- a real IPP peer

IPPTOOL = shutil.which("ipptool")

INTEROP_TEST = """
{
    NAME "Print-Job with every value syntax"
    OPERATION Print-Job
    GROUP operation-attributes-tag
    ATTR charset attributes-charset utf-8
    ATTR naturalLanguage attributes-natural-language en
    ATTR uri printer-uri $uri
    ATTR name requesting-user-name "alice"
    ATTR mimeMediaType document-format application/octet-stream
    GROUP job-attributes-tag
    ATTR collection media-col {
        MEMBER collection media-size {
            MEMBER integer x-dimension 21000
            MEMBER integer y-dimension 29700
        }
        MEMBER keyword media-source "tray-1"
    }
    ATTR resolution printer-resolution 600x300dpi
    ATTR rangeOfInteger page-ranges 1-5,8-9
    ATTR dateTime job-hold-until-time 2024-03-05T10:20:30-0500
    ATTR textWithLanguage job-message-to-operator "Bonjour"
    ATTR boolean ipp-attribute-fidelity true
    ATTR enum finishings 4,5
    ATTR no-value job-account-id
    ATTR octetString job-password "ABCD"
    FILE $filename
    STATUS successful-ok
    EXPECT job-id OF-TYPE integer WITH-VALUE 77
    EXPECT job-uri OF-TYPE uri WITH-VALUE "ipp://127.0.0.1/jobs/77"
    EXPECT job-state OF-TYPE enum WITH-VALUE 4
    EXPECT job-state-reasons OF-TYPE keyword WITH-VALUE "job-hold-until-specified"
    EXPECT media-col OF-TYPE collection
    EXPECT media-col/media-size/x-dimension OF-TYPE integer WITH-VALUE 21000
    EXPECT printer-resolution OF-TYPE resolution
    EXPECT page-ranges OF-TYPE rangeOfInteger COUNT 2
    EXPECT date-time-at-creation OF-TYPE dateTime
    EXPECT job-message-from-operator OF-TYPE textWithLanguage
    EXPECT job-printer-state-message OF-TYPE unknown
}
{
    NAME "Get-Printer-Attributes with 1setOf collection"
    OPERATION Get-Printer-Attributes
    GROUP operation-attributes-tag
    ATTR charset attributes-charset utf-8
    ATTR naturalLanguage attributes-natural-language en
    ATTR uri printer-uri $uri
    ATTR keyword requested-attributes printer-state,media-col-database,printer-name
    STATUS successful-ok
    EXPECT printer-state OF-TYPE enum IN-GROUP printer-attributes-tag WITH-VALUE 3
    EXPECT printer-name OF-TYPE nameWithLanguage
    EXPECT media-col-database OF-TYPE collection COUNT 3
    EXPECT printer-is-accepting-jobs OF-TYPE boolean WITH-VALUE false
}
{
    NAME "Validate-Job answered with an unsupported attribute"
    OPERATION Validate-Job
    GROUP operation-attributes-tag
    ATTR charset attributes-charset utf-8
    ATTR naturalLanguage attributes-natural-language en
    ATTR uri printer-uri $uri
    GROUP job-attributes-tag
    ATTR keyword sides "two-sided-sideways"
    STATUS client-error-attributes-or-values-not-supported
    EXPECT sides IN-GROUP unsupported-attributes-tag OF-TYPE unsupported
    EXPECT status-message OF-TYPE text WITH-VALUE "sides not supported"
}
"""


def _respond(request: IppMessage) -> IppMessage:
    if request.code == Operation.VALIDATE_JOB:
        resp = IppMessage.response(
            request, Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, "sides not supported"
        )
        resp.add_group(GroupTag.UNSUPPORTED).add("sides", T.UNSUPPORTED)
        return resp
    resp = IppMessage.response(request, Status.SUCCESSFUL_OK)
    if request.code == Operation.GET_PRINTER_ATTRIBUTES:
        printer = resp.add_group(GroupTag.PRINTER)
        printer.add("printer-state", T.ENUM, PrinterState.IDLE)
        printer.add("printer-name", T.NAME_WITH_LANGUAGE, StringWithLanguage("de", "Drucker 1"))
        printer.add("printer-is-accepting-jobs", T.BOOLEAN, False)
        media = []
        for key in ("a4", "letter", "legal"):
            col = Collection()
            col.add("media-key", T.KEYWORD, key)
            media.append(col)
        printer.add("media-col-database", T.BEGIN_COLLECTION, *media)
        return resp
    job = resp.add_group(GroupTag.JOB)
    job.add("job-id", T.INTEGER, 77)
    job.add("job-uri", T.URI, "ipp://127.0.0.1/jobs/77")
    job.add("job-state", T.ENUM, JobState.PENDING_HELD)
    job.add("job-state-reasons", T.KEYWORD, "job-hold-until-specified")
    media_col = request.group(GroupTag.JOB).get("media-col")  # type: ignore[union-attr]
    assert media_col is not None
    job.attributes.append(media_col)
    job.add("printer-resolution", T.RESOLUTION, Resolution(600, 300, 3))
    job.add("page-ranges", T.RANGE_OF_INTEGER, Range(1, 5), Range(8, 9))
    job.add(
        "date-time-at-creation",
        T.DATETIME,
        datetime(2024, 3, 5, 10, 20, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
    )
    job.add("job-message-from-operator", T.TEXT_WITH_LANGUAGE, StringWithLanguage("fr", "Bonjour"))
    job.add("job-printer-state-message", T.UNKNOWN)
    return resp


class _IppHandler(BaseHTTPRequestHandler):
    """Reads ipptool's chunked POST with our Parser, answers with our encoder."""

    protocol_version = "HTTP/1.1"
    captured: list[tuple[bytes, IppMessage, bytes]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            yield self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self) -> None:
        parser = Parser()
        raw = bytearray()
        document = bytearray()
        msg: IppMessage | None = None
        for chunk in self._body_chunks():
            raw += chunk
            if msg is None:
                msg = parser.feed(chunk)
                if msg is not None:
                    document += parser.rest
            else:
                document += chunk
        parser.finish()
        assert msg is not None
        self.captured.append((bytes(raw[: len(raw) - len(document)]), msg, bytes(document)))
        body = encode(_respond(msg))
        self.send_response(200)
        self.send_header("Content-Type", "application/ipp")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.skipif(IPPTOOL is None, reason="ipptool (cups-ipp-utils) is not installed")
def test_interoperates_with_ipptool(tmp_path: Path) -> None:
    handler = type("Handler", (_IppHandler,), {"captured": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        test_file = tmp_path / "interop.test"
        test_file.write_text(INTEROP_TEST)
        document = tmp_path / "doc.txt"
        document.write_bytes(b"hello document data\n")
        uri = f"ipp://127.0.0.1:{server.server_address[1]}/ipp/print"
        proc = subprocess.run(
            [str(IPPTOOL), "-T", "10", "-tv", "-f", str(document), uri, str(test_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.count("[PASS]") == 3 and "[FAIL]" not in out, out
    # What CUPS's own parser made of our responses:
    for line in (
        "media-col (collection) = "
        "{media-size={x-dimension=21000 y-dimension=29700} media-source=tray-1}",
        "printer-resolution (resolution) = 600x300dpi",
        "page-ranges (1setOf rangeOfInteger) = 1-5,8-9",
        "date-time-at-creation (dateTime) = 2024-03-05T10:20:30+0130",
        "job-message-from-operator (textWithLanguage) = Bonjour[fr]",
        "job-printer-state-message (unknown) = unknown",
        "printer-name (nameWithLanguage) = Drucker 1[de]",
        "media-col-database (1setOf collection) = "
        "{media-key=a4},{media-key=letter},{media-key=legal}",
        "sides (unsupported) = unsupported",
    ):
        assert line in out, f"{line!r} not in ipptool output:\n{out}"

    # What we made of ipptool's requests:
    captured = handler.captured
    assert [m.code for _, m, _ in captured] == [
        Operation.PRINT_JOB,
        Operation.GET_PRINTER_ATTRIBUTES,
        Operation.VALIDATE_JOB,
    ]
    raw, request, doc = captured[0]
    assert doc == b"hello document data\n"
    assert encode(request) == raw  # byte for byte what CUPS encodes
    op = request.operation
    assert [(a.name, a.tag) for a in op] == [
        ("attributes-charset", T.CHARSET),
        ("attributes-natural-language", T.NATURAL_LANGUAGE),
        ("printer-uri", T.URI),
        ("requesting-user-name", T.NAME),
        ("document-format", T.MIME_MEDIA_TYPE),
    ]
    job = request.group(GroupTag.JOB)
    assert job is not None
    media_col = job.get("media-col")
    assert media_col is not None and media_col.tag == T.BEGIN_COLLECTION
    size = media_col.value.get("media-size")  # type: ignore[attr-defined]
    assert size.value.attributes == [  # type: ignore[union-attr]
        Attribute("x-dimension", [Value(T.INTEGER, 21000)]),
        Attribute("y-dimension", [Value(T.INTEGER, 29700)]),
    ]
    assert job.get("printer-resolution").values == [Value(T.RESOLUTION, Resolution(600, 300, 3))]  # type: ignore[union-attr]
    assert job.get("page-ranges").python_values == [Range(1, 5), Range(8, 9)]  # type: ignore[union-attr]
    hold = job.get("job-hold-until-time")
    assert hold is not None and hold.tag == T.DATETIME
    assert hold.value == datetime(2024, 3, 5, 10, 20, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert hold.value.utcoffset() == timedelta(hours=-5)  # type: ignore[attr-defined]
    # ipptool sends textWithLanguage with an empty language.
    assert job.get("job-message-to-operator").values == [  # type: ignore[union-attr]
        Value(T.TEXT_WITH_LANGUAGE, StringWithLanguage("", "Bonjour"))
    ]
    assert job.get("ipp-attribute-fidelity").values == [Value(T.BOOLEAN, True)]  # type: ignore[union-attr]
    assert job.get("finishings").values == [Value(T.ENUM, 4), Value(T.ENUM, 5)]  # type: ignore[union-attr]
    assert job.get("job-account-id").values == [Value(T.NO_VALUE, None)]  # type: ignore[union-attr]
    assert job.get("job-password").values == [Value(T.OCTET_STRING, b"ABCD")]  # type: ignore[union-attr]
    raw, request, doc = captured[1]
    assert doc == b"" and encode(request) == raw
    assert request.operation.get("requested-attributes").python_values == [  # type: ignore[union-attr]
        "printer-state",
        "media-col-database",
        "printer-name",
    ]
