"""IPP messages as objects: a message, its attribute groups, attributes and typed values.

What the codec (`ipp.codec`) turns RFC 8010 bytes into and back; every value keeps its
value tag, so a message re-encodes exactly as it came (RFC 8010 §3.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from spoolvault.ipp.constants import GroupTag, ValueTag

__all__ = [
    "Attribute",
    "AttributeGroup",
    "Collection",
    "IppMessage",
    "Range",
    "Resolution",
    "StringWithLanguage",
    "Value",
]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolution value (RFC 8010 §3.9): x and y feed/cross-feed, units 3 = dpi, 4 = dpcm."""

    x: int
    y: int
    units: int


@dataclass(frozen=True, slots=True)
class Range:
    """A rangeOfInteger value; the codec does not insist on lower <= upper."""

    lower: int
    upper: int


@dataclass(frozen=True, slots=True)
class StringWithLanguage:
    """A textWithLanguage or nameWithLanguage value (RFC 8010 §3.9)."""

    language: str
    text: str


@dataclass(frozen=True, slots=True)
class Value:
    """One attribute value and its value tag.

    Python types by tag: integer/enum -> int; boolean -> bool; dateTime -> aware datetime;
    resolution -> Resolution; rangeOfInteger -> Range; text/nameWithLanguage ->
    StringWithLanguage; begCollection -> Collection; the character-string tags -> str;
    out-of-band tags (0x10-0x1F) -> None; octetString and every other tag (including
    the extension tag 0x7F, whose first four octets are the extended type) -> bytes.
    """

    tag: int
    value: object


class _AttributeList:
    """Lookup and editing shared by attribute groups and collections."""

    attributes: list[Attribute]

    def get(self, name: str) -> Attribute | None:
        """The first attribute of that name, or None."""
        for attr in self.attributes:
            if attr.name == name:
                return attr
        return None

    def __contains__(self, name: object) -> bool:
        return any(attr.name == name for attr in self.attributes)

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.attributes)

    def add(self, name: str, tag: int, *values: object) -> Attribute:
        """Append an attribute whose python values are wrapped into `Value`s of `tag`.

        A `Value` passed among the values is kept as is (for 1setOf of mixed syntax such
        as integer | rangeOfInteger). For begCollection a list of `Attribute` is taken as
        a `Collection`. An out-of-band tag with no value gets its one empty value.
        """
        attr = Attribute(name, _make_values(tag, values))
        self.attributes.append(attr)
        return attr

    def set(self, name: str, tag: int, *values: object) -> Attribute:
        """Like `add`, but replace the first attribute of that name in place (and drop others)."""
        attr = Attribute(name, _make_values(tag, values))
        for i, old in enumerate(self.attributes):
            if old.name == name:
                self.attributes[i] = attr
                self.attributes[i + 1 :] = [a for a in self.attributes[i + 1 :] if a.name != name]
                return attr
        self.attributes.append(attr)
        return attr

    def remove(self, name: str) -> bool:
        """Remove every attribute of that name; True if there was one."""
        kept = [a for a in self.attributes if a.name != name]
        removed = len(kept) != len(self.attributes)
        self.attributes[:] = kept
        return removed


@dataclass(eq=True)
class Collection(_AttributeList):
    """A collection value (RFC 8010 §3.1.6): ordered member attributes."""

    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class Attribute:
    """A named attribute with one or more values (more than one: a 1setOf)."""

    name: str
    values: list[Value]

    @property
    def tag(self) -> int:
        """The first value's tag."""
        if not self.values:
            raise ValueError(f"attribute {self.name!r} has no values")
        return self.values[0].tag

    @property
    def value(self) -> object:
        """The first value's python value."""
        if not self.values:
            raise ValueError(f"attribute {self.name!r} has no values")
        return self.values[0].value

    @property
    def python_values(self) -> list[object]:
        """All python values, in order."""
        return [v.value for v in self.values]


@dataclass
class AttributeGroup(_AttributeList):
    """An attribute group: its delimiter tag (`GroupTag`) and its attributes, in order."""

    tag: int
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class IppMessage:
    """An IPP request or response; `code` is the operation-id or the status-code."""

    version: tuple[int, int]
    code: int
    request_id: int
    groups: list[AttributeGroup] = field(default_factory=list)

    def group(self, tag: int) -> AttributeGroup | None:
        """The first group with that tag, or None."""
        for group in self.groups:
            if group.tag == tag:
                return group
        return None

    def groups_of(self, tag: int) -> list[AttributeGroup]:
        """Every group with that tag, in order (e.g. one job group per job in Get-Jobs)."""
        return [g for g in self.groups if g.tag == tag]

    def add_group(self, tag: int) -> AttributeGroup:
        """Append a new, empty group."""
        group = AttributeGroup(tag)
        self.groups.append(group)
        return group

    @property
    def operation(self) -> AttributeGroup:
        """The operation attributes group, created first in the message if missing."""
        group = self.group(GroupTag.OPERATION)
        if group is None:
            group = AttributeGroup(GroupTag.OPERATION)
            self.groups.insert(0, group)
        return group

    @classmethod
    def response(cls, request: IppMessage, status: int, message: str | None = None) -> IppMessage:
        """A response to `request`: its version and request-id, and the RFC 8011 §4.1.4
        operation attributes (charset and natural language first, then status-message).

        Messages are in English: the requested natural language is echoed only if it is
        English (en, en-gb, ...), else the response says en (RFC 8011 §4.1.4.2)."""
        language = "en"
        op = request.group(GroupTag.OPERATION)
        requested = op.get("attributes-natural-language") if op is not None else None
        if (
            requested is not None
            and requested.values
            and requested.tag == ValueTag.NATURAL_LANGUAGE
            and isinstance(requested.value, str)
            and requested.value.lower().partition("-")[0] == "en"
        ):
            language = requested.value
        response = cls(request.version, status, request.request_id)
        group = response.add_group(GroupTag.OPERATION)
        group.add("attributes-charset", ValueTag.CHARSET, "utf-8")
        group.add("attributes-natural-language", ValueTag.NATURAL_LANGUAGE, language)
        if message is not None:
            group.add("status-message", ValueTag.TEXT, message)
        return response


def _make_values(tag: int, values: tuple[object, ...]) -> list[Value]:
    if not values and 0x10 <= tag <= 0x1F:
        return [Value(tag, None)]
    out: list[Value] = []
    for v in values:
        if isinstance(v, Value):
            out.append(v)
        elif tag == ValueTag.BEGIN_COLLECTION and isinstance(v, list):
            out.append(Value(tag, Collection(list(v))))
        else:
            out.append(Value(tag, v))
    return out
