"""Client-supplied names as safe text: decoding legacy bytes, dropping what must never be shown.

Owners and titles arrive from IPP, PJL, LPD control files and printers; they end up in
logs, web pages, release station screens and the bytes sent on to a printer, so every
front end and printer scheme cleans them the same way.
"""

from __future__ import annotations

import unicodedata

# IPP's name(255) is 255 octets; owners and titles from other protocols get the same room.
MAX_NAME_BYTES = 255

# Characters that must never reach a log line, a web page or a release station's screen from
# a client-supplied name: controls (C0, DEL, C1), format characters (bidi overrides, zero
# width), line and paragraph separators, unassigned/private-use code points.
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def decode_text(raw: bytes) -> str:
    """Bytes from a legacy protocol as text: UTF-8 when valid, else ISO-8859-1.

    cups-lpd's smart_strlcpy makes the same guess (OpenPrinting/cups scheduler/cups-lpd.c):
    legacy clients send Latin-1, current ones UTF-8, and Latin-1 never fails to decode.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def clean_text(value: bytes | str, limit: int = MAX_NAME_BYTES) -> str:
    """A client-supplied name made safe: no control or format characters, at most ``limit``
    UTF-8 octets (cut on a character boundary), surrounding whitespace removed."""
    text = decode_text(value) if isinstance(value, bytes) else value
    kept = "".join(
        " " if ch in "\t\r\n" else ch
        for ch in text
        if ch in "\t\r\n" or unicodedata.category(ch) not in _DROP_CATEGORIES
    )
    encoded = kept.strip().encode("utf-8")[:limit]
    return encoded.decode("utf-8", errors="ignore").strip()
