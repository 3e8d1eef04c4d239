"""RFC 8010 IPP encoding: bytes <-> `IppMessage`, keeping every value's tag.

Wire format (RFC 8010 §3.1)::

    version-number (2) operation-id | status-code (2) request-id (4)
    { delimiter-tag (1) { value-tag (1) name-length (2) name value-length (2) value }* }*
    end-of-attributes-tag (0x03)
    document data ...

A value whose name-length is 0 is one more value of the attribute before it (1setOf).
A collection (§3.1.6) is begCollection, then for each member a memberAttrName value
holding the member's name followed by the member's values (name-length 0 throughout),
then endCollection.

The message objects live in `ipp.message` (re-exported here: one import for callers).
The decoder is incremental (`Parser.feed`), iterative (no recursion, whatever the
nesting), bounded by `Limits`, and raises nothing but `IppParseError` on bad input:
one bad client must never take the server down.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from spoolvault.errors import ClientError
from spoolvault.ipp.constants import GroupTag, Status, ValueTag, tag_name
from spoolvault.ipp.message import (
    Attribute,
    AttributeGroup,
    Collection,
    IppMessage,
    Range,
    Resolution,
    StringWithLanguage,
    Value,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Attribute",
    "AttributeGroup",
    "Collection",
    "IppMessage",
    "IppParseError",
    "Limits",
    "Parser",
    "Range",
    "Resolution",
    "StringWithLanguage",
    "Value",
    "decode",
    "encode",
]

# --------------------------------------------------------------------------- errors, limits


class IppParseError(ClientError):
    """The request body is not a valid IPP message (or exceeds our limits).

    `status` is the IPP status to answer with; `request_id` and `version` echo the
    request header once it was read (0 and 2.0 before that).
    """

    def __init__(
        self,
        message: str,
        status: int = Status.CLIENT_ERROR_BAD_REQUEST,
        request_id: int = 0,
        version: tuple[int, int] = (2, 0),
    ) -> None:
        super().__init__(message)
        self.status = self.ipp_status = status
        self.request_id = request_id
        self.version = version


@dataclass(frozen=True)
class Limits:
    """Hard limits on what a decoder accepts; crossing one is an `IppParseError`."""

    max_header_bytes: int = 1 << 20  # everything up to and including end-of-attributes
    max_attributes: int = 2000  # attributes in all groups, collection members included
    max_values: int = 1000  # values of one attribute
    max_name_length: int = 255  # RFC 8011 §5.1.4: keywords are at most 255 octets
    max_value_length: int = 32767  # RFC 8010: lengths are SIGNED-SHORT
    max_depth: int = 16  # collection nesting
    max_groups: int = 64

    def __post_init__(self) -> None:
        for name in (
            "max_header_bytes",
            "max_attributes",
            "max_values",
            "max_name_length",
            "max_value_length",
            "max_depth",
            "max_groups",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be positive")


DEFAULT_LIMITS = Limits()

# --------------------------------------------------------------------------- encoding

_HEADER = struct.Struct(">BBHi")
_TAG_LEN = struct.Struct(">BH")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_RANGE = struct.Struct(">ii")
_RESOLUTION = struct.Struct(">iiB")
_DATETIME = struct.Struct(">HBBBBBBBBB")

_MAX_LENGTH = 0x7FFF  # SIGNED-SHORT name-length / value-length
_INT_MIN = -(1 << 31)
_INT_MAX = (1 << 31) - 1

_STR_TAGS = frozenset(
    {
        ValueTag.TEXT,
        ValueTag.NAME,
        ValueTag.KEYWORD,
        ValueTag.URI,
        ValueTag.URI_SCHEME,
        ValueTag.CHARSET,
        ValueTag.NATURAL_LANGUAGE,
        ValueTag.MIME_MEDIA_TYPE,
    }
)
_WITH_LANGUAGE_TAGS = frozenset({ValueTag.TEXT_WITH_LANGUAGE, ValueTag.NAME_WITH_LANGUAGE})
_END_COLLECTION_ITEM = b"\x37\x00\x00\x00\x00"
_UTC = UTC


def encode(msg: IppMessage) -> bytes:
    """Encode a message (without document data) to RFC 8010 bytes.

    Raises ValueError or TypeError when the message cannot be encoded: a value of the
    wrong python type for its tag, an integer outside 32 bits, a naive datetime, a name
    or value over 32767 octets, an attribute without values, a misplaced group tag.
    """
    major, minor = msg.version
    if not (0 <= major <= 255 and 0 <= minor <= 255):
        raise ValueError(f"version {msg.version!r} does not fit two octets")
    if not 0 <= msg.code <= 0xFFFF:
        raise ValueError(f"operation-id/status-code {msg.code!r} does not fit two octets")
    if not _INT_MIN <= msg.request_id <= _INT_MAX:
        raise ValueError(f"request-id {msg.request_id!r} does not fit a signed 32-bit integer")
    out = bytearray(_HEADER.pack(major, minor, msg.code, msg.request_id))
    for index, group in enumerate(msg.groups):
        tag = group.tag
        if not (0x01 <= tag <= 0x0F) or tag == GroupTag.END:
            raise ValueError(f"{tag!r} is not a group delimiter tag")
        if tag == GroupTag.OPERATION and index:
            # RFC 8011 §4.1.3: the operation attributes group comes first, once.
            raise ValueError("the operation attributes group must be the first group")
        out.append(tag)
        for attr in group.attributes:
            _encode_attribute(out, attr, member=False)
    out.append(GroupTag.END)
    return bytes(out)


def _encode_attribute(out: bytearray, attr: Attribute, *, member: bool) -> None:
    name = attr.name.encode("utf-8")
    if not name:
        raise ValueError("an attribute name must not be empty")
    if len(name) > _MAX_LENGTH:
        raise ValueError(f"attribute name {attr.name[:40]!r}... is longer than 32767 octets")
    if not attr.values:
        raise ValueError(f"attribute {attr.name!r} has no values")
    if member:
        # RFC 8010 §3.1.6: memberAttrName, name-length 0, the member name as value.
        out += b"\x4a\x00\x00"
        out += _U16.pack(len(name))
        out += name
        first_name = b""
    else:
        first_name = name
    for i, value in enumerate(attr.values):
        _encode_value(out, value.tag, first_name if i == 0 else b"", value.value, attr.name)


def _encode_value(out: bytearray, tag: int, name: bytes, value: object, attr_name: str) -> None:
    if tag == ValueTag.BEGIN_COLLECTION:
        if not isinstance(value, Collection):
            raise TypeError(f"{attr_name}: a begCollection value must be a Collection")
        out += _TAG_LEN.pack(tag, len(name))
        out += name
        out += b"\x00\x00"  # begCollection's own value is empty
        for member in value.attributes:
            _encode_attribute(out, member, member=True)
        out += _END_COLLECTION_ITEM
        return
    raw = _encode_raw(tag, value, attr_name)
    if len(raw) > _MAX_LENGTH:
        raise ValueError(f"{attr_name}: value of {len(raw)} octets exceeds 32767")
    out += _TAG_LEN.pack(tag, len(name))
    out += name
    out += _U16.pack(len(raw))
    out += raw


def _encode_raw(tag: int, value: object, attr_name: str) -> bytes:
    if not isinstance(tag, int) or not 0x10 <= tag <= 0xFF:
        raise ValueError(f"{attr_name}: {tag!r} is not a value tag")
    if tag in _STR_TAGS:
        if not isinstance(value, str):
            raise TypeError(f"{attr_name}: a {tag_name(tag)} value must be str")
        return value.encode("utf-8")
    if tag in (ValueTag.INTEGER, ValueTag.ENUM):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{attr_name}: a {tag_name(tag)} value must be int")
        _check_int(value, attr_name)
        return _I32.pack(value)
    if tag == ValueTag.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"{attr_name}: a boolean value must be bool")
        return b"\x01" if value else b"\x00"
    if tag <= 0x1F:
        if value is not None:
            raise TypeError(f"{attr_name}: an out-of-band value ({tag_name(tag)}) must be None")
        return b""
    if tag in _WITH_LANGUAGE_TAGS:
        if not isinstance(value, StringWithLanguage):
            raise TypeError(f"{attr_name}: a {tag_name(tag)} value must be StringWithLanguage")
        lang = value.language.encode("utf-8")
        text = value.text.encode("utf-8")
        return _U16.pack(len(lang)) + lang + _U16.pack(len(text)) + text
    if tag == ValueTag.DATETIME:
        if not isinstance(value, datetime):
            raise TypeError(f"{attr_name}: a dateTime value must be datetime")
        return _encode_datetime(value, attr_name)
    if tag == ValueTag.RESOLUTION:
        if not isinstance(value, Resolution):
            raise TypeError(f"{attr_name}: a resolution value must be Resolution")
        _check_int(value.x, attr_name)
        _check_int(value.y, attr_name)
        if not 0 <= value.units <= 255:
            raise ValueError(f"{attr_name}: resolution units {value.units} do not fit an octet")
        return _RESOLUTION.pack(value.x, value.y, value.units)
    if tag == ValueTag.RANGE_OF_INTEGER:
        if not isinstance(value, Range):
            raise TypeError(f"{attr_name}: a rangeOfInteger value must be Range")
        _check_int(value.lower, attr_name)
        _check_int(value.upper, attr_name)
        return _RANGE.pack(value.lower, value.upper)
    if tag in (ValueTag.END_COLLECTION, ValueTag.MEMBER_NAME):
        raise ValueError(f"{attr_name}: {tag_name(tag)} is structural; use a Collection value")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{attr_name}: a {tag_name(tag)} value must be bytes")
    raw = bytes(value)
    if tag == ValueTag.EXTENSION and (len(raw) < 4 or raw[0] & 0x80):
        raise ValueError(f"{attr_name}: an extension value starts with a 31-bit type code")
    return raw


def _check_int(value: int, attr_name: str) -> None:
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"{attr_name}: {value} does not fit a signed 32-bit integer")


def _encode_datetime(value: datetime, attr_name: str) -> bytes:
    # RFC 2579 DateAndTime, 11 octets: local time, deci-seconds, direction and offset.
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{attr_name}: a dateTime value must be timezone-aware")
    seconds = offset // timedelta(seconds=1)
    if offset % timedelta(minutes=1):
        raise ValueError(f"{attr_name}: UTC offset {offset} is not a whole number of minutes")
    direction = 0x2B if seconds >= 0 else 0x2D  # "+" or "-"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return _DATETIME.pack(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 100_000,
        direction,
        hours,
        minutes,
    )


# --------------------------------------------------------------------------- decoding

_TOO_LARGE = Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE
_TOO_LONG = Status.CLIENT_ERROR_REQUEST_VALUE_TOO_LONG

# Plain ints for the hot loop: comparing with enum members costs an attribute lookup.
_END = int(GroupTag.END)
_OPERATION = int(GroupTag.OPERATION)
_INTEGER = int(ValueTag.INTEGER)
_BOOLEAN = int(ValueTag.BOOLEAN)
_ENUM = int(ValueTag.ENUM)
_DATE = int(ValueTag.DATETIME)
_RES = int(ValueTag.RESOLUTION)
_RNG = int(ValueTag.RANGE_OF_INTEGER)
_BEG = int(ValueTag.BEGIN_COLLECTION)
_ENDCOL = int(ValueTag.END_COLLECTION)
_MEMBER = int(ValueTag.MEMBER_NAME)
_EXT = int(ValueTag.EXTENSION)
_STR_INTS = frozenset(int(t) for t in _STR_TAGS)
_LANG_INTS = frozenset(int(t) for t in _WITH_LANGUAGE_TAGS)

_tz_cache: dict[tuple[int, int, int], timezone] = {}


class _Decoder:
    """The decoding state machine; it consumes whole items and keeps its state between calls.

    `run` is handed a buffer that starts at an item boundary (absolute offset `base`) and
    returns the relative offset of the first item it could not complete or, once `done`,
    the offset just after the end-of-attributes tag.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.msg: IppMessage | None = None
        self.done = False
        self.group: AttributeGroup | None = None
        # Where values with name-length 0 go: the last attribute, or the current member.
        self.attr: Attribute | None = None
        # Open collections: (collection, attribute holding it in the enclosing context).
        self.stack: list[tuple[Collection, Attribute]] = []
        self.n_attributes = 0
        self.request_id = 0
        self.version = (2, 0)

    def fail(self, message: str, status: int = Status.CLIENT_ERROR_BAD_REQUEST) -> IppParseError:
        """An IppParseError echoing the request header, when it was read."""
        return IppParseError(message, status, self.request_id, self.version)

    def too_large(self, at: int) -> IppParseError:
        return self.fail(
            f"IPP message header exceeds {self.limits.max_header_bytes} bytes (at byte {at})",
            _TOO_LARGE,
        )

    def path(self, attr: Attribute | None, name: str | None = None) -> str:
        """The attribute being read, as 'media-col/media-size/x-dimension'."""
        parts = [owner.name for _, owner in self.stack]
        if name is not None:
            parts.append(name)
        elif attr is not None:
            parts.append(attr.name)
        return "/".join(parts) if parts else "(no attribute)"

    def run(self, data: bytes | bytearray, base: int) -> int:
        """Consume complete items from `data`; see the class docstring."""
        with memoryview(data) as mv:
            return self._run(data, mv, base)

    def _run(self, data: bytes | bytearray, mv: memoryview, base: int) -> int:
        limits = self.limits
        n = len(data)
        p = 0
        if self.msg is None:
            if n < 8:
                return 0
            major, minor, code, request_id = _HEADER.unpack_from(data, 0)
            self.version = (major, minor)
            self.request_id = request_id
            self.msg = IppMessage((major, minor), code, request_id)
            p = 8
        msg = self.msg
        stack = self.stack
        group = self.group
        attr = self.attr
        limit = limits.max_header_bytes - base  # no item may end beyond this (relative)
        max_name = limits.max_name_length
        max_value = limits.max_value_length
        max_values = limits.max_values
        max_attributes = limits.max_attributes
        fail = self.fail
        text = self._text
        try:
            while True:
                if p >= n:
                    return p
                tag = data[p]
                if tag < 0x10:
                    # ---- delimiter tag (RFC 8010 §3.5.1)
                    if p + 1 > limit:
                        raise self.too_large(base + p)
                    if stack:
                        raise fail(
                            f"{tag_name(tag)} at byte {base + p} inside collection "
                            f"{self.path(attr)!r}: missing endCollection"
                        )
                    if tag == _END:
                        self.done = True
                        return p + 1
                    if tag == 0:
                        raise fail(f"invalid delimiter tag 0x00 at byte {base + p}")
                    if tag == _OPERATION and msg.groups:
                        # RFC 8011 §4.1.3: the operation attributes group comes first, once.
                        raise fail(
                            f"operation-attributes-tag at byte {base + p} is not the first group"
                        )
                    if len(msg.groups) >= limits.max_groups:
                        raise fail(
                            f"more than {limits.max_groups} attribute groups (at byte {base + p})",
                            _TOO_LARGE,
                        )
                    group = AttributeGroup(tag)
                    msg.groups.append(group)
                    attr = None
                    p += 1
                    continue

                # ---- value-tag (1) name-length (2) name value-length (2) value
                if p + 3 > n:
                    return p
                name_len = (data[p + 1] << 8) | data[p + 2]
                if name_len > max_name:
                    raise fail(
                        f"attribute name of {name_len} octets at byte {base + p} "
                        f"exceeds {max_name}",
                        _TOO_LONG,
                    )
                q = p + 3 + name_len
                if q + 2 > limit:
                    raise self.too_large(base + p)
                if q + 2 > n:
                    return p
                value_len = (data[q] << 8) | data[q + 1]
                v = q + 2
                end = v + value_len
                if value_len > max_value:
                    peek = str(mv[p + 3 : q], "utf-8", "replace") if name_len else None
                    raise fail(
                        f"value of {value_len} octets for {self.path(attr, peek)!r} "
                        f"at byte {base + p} exceeds {max_value}",
                        _TOO_LONG,
                    )
                if end > limit:
                    raise self.too_large(base + p)
                if end > n:
                    return p

                # -- structural tags of collections (RFC 8010 §3.1.6)
                if tag == _ENDCOL:
                    if not stack:
                        raise fail(f"endCollection outside a collection at byte {base + p}")
                    if name_len or value_len:
                        raise fail(
                            f"endCollection at byte {base + p} must have empty name and value"
                        )
                    if attr is not None and not attr.values:
                        raise fail(f"member {self.path(attr)!r} has no value (byte {base + p})")
                    attr = stack.pop()[1]
                    p = end
                    continue
                if tag == _MEMBER:
                    if not stack:
                        raise fail(f"memberAttrName outside a collection at byte {base + p}")
                    if name_len:
                        raise fail(f"memberAttrName at byte {base + p} must have name-length 0")
                    if attr is not None and not attr.values:
                        raise fail(f"member {self.path(attr)!r} has no value (byte {base + p})")
                    if value_len == 0:
                        raise fail(f"empty memberAttrName at byte {base + p}")
                    if value_len > max_name:
                        raise fail(
                            f"member name of {value_len} octets at byte {base + p} "
                            f"exceeds {max_name}",
                            _TOO_LONG,
                        )
                    self.n_attributes += 1
                    if self.n_attributes > max_attributes:
                        raise fail(
                            f"more than {max_attributes} attributes (at byte {base + p})",
                            _TOO_LARGE,
                        )
                    attr = Attribute(text(mv, v, end, base, "member name", None), [])
                    stack[-1][0].attributes.append(attr)
                    p = end
                    continue

                # -- whose value is it?
                if name_len:
                    if stack:
                        raise fail(
                            f"named attribute at byte {base + p} inside collection "
                            f"{self.path(attr)!r}: members must use memberAttrName"
                        )
                    if group is None:
                        raise fail(f"attribute at byte {base + p} precedes any group tag")
                    self.n_attributes += 1
                    if self.n_attributes > max_attributes:
                        raise fail(
                            f"more than {max_attributes} attributes (at byte {base + p})",
                            _TOO_LARGE,
                        )
                    attr = Attribute(text(mv, p + 3, q, base, "attribute name", None), [])
                    group.attributes.append(attr)
                    values = attr.values
                else:
                    if attr is None:
                        where = "collection member" if stack else "attribute"
                        raise fail(
                            f"value with name-length 0 at byte {base + p} has no {where} "
                            "before it to belong to"
                        )
                    values = attr.values
                    if len(values) >= max_values:
                        raise fail(
                            f"{self.path(attr)!r} has more than {max_values} values "
                            f"(at byte {base + p})",
                            _TOO_LARGE,
                        )

                # -- the value itself (RFC 8010 §3.9)
                if tag in _STR_INTS:
                    values.append(Value(tag, text(mv, v, end, base, tag, attr)))
                elif tag in (_INTEGER, _ENUM):
                    if value_len != 4:
                        raise self.bad_length(tag, value_len, "4", base + p, attr)
                    values.append(Value(tag, _I32.unpack_from(data, v)[0]))
                elif tag == _BOOLEAN:
                    if value_len != 1:
                        raise self.bad_length(tag, value_len, "1", base + p, attr)
                    octet = data[v]
                    if octet > 1:
                        raise fail(
                            f"boolean value {octet} of {self.path(attr)!r} at byte {base + v} "
                            "is neither 0 nor 1"
                        )
                    values.append(Value(tag, octet == 1))
                elif tag == _BEG:
                    # RFC 3382 reserved the begCollection value: a non-empty one is
                    # ignored here (CUPS refuses it); we always send it empty.
                    if len(stack) >= limits.max_depth:
                        raise fail(
                            f"collection {self.path(attr)!r} at byte {base + p} nests deeper "
                            f"than {limits.max_depth}",
                            _TOO_LARGE,
                        )
                    collection = Collection()
                    values.append(Value(tag, collection))
                    stack.append((collection, attr))
                    attr = None
                elif tag <= 0x1F:
                    # Out-of-band: the value should be empty; like CUPS, tolerate (and
                    # drop) a non-empty one, which some printers send.
                    values.append(Value(tag, None))
                elif tag in _LANG_INTS:
                    values.append(Value(tag, self.with_language(data, mv, v, end, tag, base, attr)))
                elif tag == _DATE:
                    if value_len != 11:
                        raise self.bad_length(tag, value_len, "11", base + p, attr)
                    values.append(Value(tag, self.datetime(data, v, base, attr)))
                elif tag == _RES:
                    if value_len != 9:
                        raise self.bad_length(tag, value_len, "9", base + p, attr)
                    values.append(Value(tag, Resolution(*_RESOLUTION.unpack_from(data, v))))
                elif tag == _RNG:
                    if value_len != 8:
                        raise self.bad_length(tag, value_len, "8", base + p, attr)
                    values.append(Value(tag, Range(*_RANGE.unpack_from(data, v))))
                elif tag == _EXT:
                    # RFC 8010 §3.5.2: the first four octets of the value are the extended
                    # type, 0x00000000-0x7FFFFFFF; the value is kept whole and opaque.
                    if value_len < 4 or data[v] & 0x80:
                        raise fail(
                            f"extension value of {self.path(attr)!r} at byte {base + p} "
                            "does not start with a 31-bit type code"
                        )
                    values.append(Value(tag, bytes(mv[v:end])))
                else:
                    # octetString and unassigned tags: opaque octets.
                    values.append(Value(tag, bytes(mv[v:end])))
                p = end
        finally:
            self.group = group
            self.attr = attr

    def bad_length(
        self, tag: int, got: int, want: str, at: int, attr: Attribute | None
    ) -> IppParseError:
        return self.fail(
            f"{tag_name(tag)} value of {self.path(attr)!r} at byte {at} has length {got}, "
            f"not {want}"
        )

    def _text(
        self,
        mv: memoryview,
        start: int,
        end: int,
        base: int,
        what: str | int,
        attr: Attribute | None,
    ) -> str:
        """Decode UTF-8; `what` names the field in errors (a tag: its syntax name)."""
        try:
            value = str(mv[start:end], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(
                f"{self._field(what, attr)} at byte {base + start + exc.start} is not UTF-8"
            ) from None
        if "\x00" in value:
            # C consumers (CUPS, printers) would silently truncate at the NUL: refuse it.
            raise self.fail(f"{self._field(what, attr)} at byte {base + start} contains NUL")
        return value

    def _field(self, what: str | int, attr: Attribute | None) -> str:
        name = tag_name(what) if isinstance(what, int) else what
        if attr is None and not self.stack:
            return name
        return f"{name} of {self.path(attr)!r}"

    def with_language(
        self,
        data: bytes | bytearray,
        mv: memoryview,
        v: int,
        end: int,
        tag: int,
        base: int,
        attr: Attribute | None,
    ) -> StringWithLanguage:
        # RFC 8010 §3.9: language-length, language, text-length, text; all must add up.
        if end - v < 4:
            raise self.bad_length(tag, end - v, "at least 4", base + v, attr)
        lang_len = (data[v] << 8) | data[v + 1]
        t = v + 2 + lang_len
        if t + 2 > end:
            raise self.fail(
                f"{tag_name(tag)} value of {self.path(attr)!r} at byte {base + v}: "
                "the language length overflows the value"
            )
        text_len = (data[t] << 8) | data[t + 1]
        if t + 2 + text_len != end:
            raise self.fail(
                f"{tag_name(tag)} value of {self.path(attr)!r} at byte {base + v}: "
                "the language and text lengths do not add up to the value length"
            )
        language = self._text(mv, v + 2, t, base, "language", attr)
        return StringWithLanguage(language, self._text(mv, t + 2, end, base, tag, attr))

    def datetime(
        self, data: bytes | bytearray, v: int, base: int, attr: Attribute | None
    ) -> datetime:
        # RFC 2579 DateAndTime. Python has no leap second (60): such a value is refused.
        (year, month, day, hour, minute, second, deci, direction, off_h, off_m) = (
            _DATETIME.unpack_from(data, v)
        )
        if direction not in (0x2B, 0x2D) or deci > 9 or off_h > 23 or off_m > 59:
            raise self.fail(f"invalid dateTime value of {self.path(attr)!r} at byte {base + v}")
        key = (direction, off_h, off_m)
        tz = _tz_cache.get(key)
        if tz is None:
            delta = timedelta(hours=off_h, minutes=off_m)
            if direction == 0x2D:
                delta = -delta
            tz = timezone(delta) if delta else _UTC
            _tz_cache[key] = tz
        try:
            return datetime(year, month, day, hour, minute, second, deci * 100_000, tz)
        except ValueError as exc:
            raise self.fail(
                f"invalid dateTime value of {self.path(attr)!r} at byte {base + v}: {exc}"
            ) from None


class Parser:
    """Incremental decoder for an HTTP body that arrives in chunks.

    `feed` returns the message once its end-of-attributes tag has been read; the bytes
    that followed it in the fed data (the start of the document) are then in `rest`.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._decoder = _Decoder(limits)
        self._limits = limits
        self._pending = bytearray()  # an incomplete item carried to the next feed
        self._base = 0  # absolute offset of the first pending byte
        self._message: IppMessage | None = None
        self._rest = b""
        self._error: IppParseError | None = None

    @property
    def rest(self) -> bytes:
        """Bytes after the end-of-attributes tag that came in the fed data."""
        return self._rest

    @property
    def message(self) -> IppMessage | None:
        """The decoded message, once complete."""
        return self._message

    def feed(self, data: bytes | bytearray | memoryview) -> IppMessage | None:
        """Consume the next piece of the body; return the message once it is complete."""
        if self._message is not None:
            raise RuntimeError("Parser.feed() after the message was complete; use .rest")
        if self._error is not None:
            raise self._error
        if not data:
            return None
        if self._pending:
            self._pending += data
            buf: bytes | bytearray = self._pending
        else:
            buf = data if isinstance(data, bytes | bytearray) else bytes(data)
        try:
            stop = self._decoder.run(buf, self._base)
            if self._decoder.done:
                self._rest = bytes(buf[stop:])
                self._pending = bytearray()
                self._message = self._decoder.msg
                return self._message
            if self._base + len(buf) >= self._limits.max_header_bytes:
                raise self._decoder.too_large(self._base + len(buf))
        except IppParseError as exc:
            self._error = exc
            self._pending = bytearray()
            raise
        if buf is self._pending:
            del self._pending[:stop]
        else:
            self._pending = bytearray(buf[stop:])
        self._base += stop
        return None

    def finish(self) -> None:
        """Declare the end of the body; raise IppParseError if the message is incomplete."""
        if self._message is not None:
            return
        if self._error is not None:
            raise self._error
        total = self._base + len(self._pending)
        if total == 0:
            self._error = self._decoder.fail("empty request body: no IPP message")
        elif self._decoder.msg is None:
            self._error = self._decoder.fail(
                f"truncated IPP header: {total} of 8 bytes before the end of the body"
            )
        else:
            self._error = self._decoder.fail(
                f"truncated IPP message: the body ended at byte {total} "
                "before the end-of-attributes tag"
            )
        raise self._error


def decode(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> tuple[IppMessage, int]:
    """Decode a whole message; return it and the offset where the document data starts."""
    decoder = _Decoder(limits)
    buf = data if isinstance(data, bytes | bytearray) else bytes(data)
    stop = decoder.run(buf, 0)
    if not decoder.done or decoder.msg is None:
        if not buf:
            raise decoder.fail("empty request body: no IPP message")
        if decoder.msg is None:
            raise decoder.fail(f"truncated IPP header: {len(buf)} of 8 bytes")
        raise decoder.fail(
            f"truncated IPP message: data ended at byte {len(buf)} (incomplete item at byte "
            f"{stop}) before the end-of-attributes tag"
        )
    return decoder.msg, stop
