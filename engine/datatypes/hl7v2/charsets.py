"""Character sets: HL7 MSH-18 names, detection and decoding.

HL7 names its character sets in table 0211 (MSH-18); Python needs codec names. Only
ASCII-compatible codecs are supported, because segment and field boundaries are found
on the bytes before decoding.
"""

from __future__ import annotations

import codecs

from engine.core.errors import ParseError

BOM = b"\xef\xbb\xbf"

# HL7 table 0211 -> Python codec. UTF-16/32 are left out on purpose: a message in
# them would not start with the ASCII bytes "MSH".
HL7_CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",  # pre-2.5 name; in practice senders mean UTF-8 when the bytes are ASCII-compatible
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR13": "shift_jis",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",
    "BIG-5": "big5",
}

_NOT_ASCII_COMPATIBLE = ("utf_16", "utf_32", "utf-16", "utf-32")


def resolve(name: str) -> str:
    """Return the Python codec name for an HL7 (MSH-18) or Python charset name.

    Raises ``LookupError`` for unknown names and for codecs that are not ASCII-compatible.

    >>> resolve("8859/1"), resolve("UTF-8")
    ('latin-1', 'utf-8')
    """
    hl7 = HL7_CHARSETS.get(name.strip().upper())
    if hl7:
        return hl7
    try:
        codec = codecs.lookup(name.strip()).name
    except ValueError as exc:  # e.g. "embedded null character": a NUL-padded MSH-18
        raise LookupError(f"{name!r} is not a character set name") from exc
    if codec.startswith(_NOT_ASCII_COMPATIBLE):
        raise LookupError(f"{name} is not ASCII-compatible")
    return codec


def declared(raw: bytes) -> str | None:
    """The codec named by MSH-18 (first repetition), or None when absent or unknown.

    Reads the bytes directly: MSH-1 to MSH-17 are ASCII in every supported charset.
    """
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return None
    end = len(raw)
    for stop in (b"\r", b"\n"):
        pos = raw.find(stop, start)
        if 0 <= pos < end:
            end = pos
    fs = raw[start + 3 : start + 4]
    fields = raw[start:end].split(fs)
    if len(fields) < 18:
        return None
    rep = fields[1][1:2] or b"~"
    value = fields[17].split(rep)[0].strip(b" \t\x00")
    if not value:
        return None
    try:
        return resolve(value.decode("ascii"))
    except (UnicodeDecodeError, LookupError):
        return None


def decode(raw: bytes, charset: str = "auto") -> tuple[str, str]:
    """Decode message bytes; return (text, codec used). A UTF-8 BOM is removed.

    ``auto``: BOM -> UTF-8; else MSH-18; else UTF-8, falling back to windows-1252, then
    latin-1 (which never fails). A declared MSH-18 that does not fit the bytes falls back
    the same way, because senders often label 8-bit text as ASCII. An explicit ``charset``
    is trusted: bytes that do not decode raise ``ParseError``.
    """
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
        if charset == "auto":
            return _strict(raw, "utf-8")
    if charset != "auto":
        return _strict(raw, charset)
    candidates = ["utf-8", "windows-1252", "latin-1"]
    named = declared(raw)
    if named:
        candidates.insert(0, named)
    for codec in candidates:
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def _strict(raw: bytes, codec: str) -> tuple[str, str]:
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as exc:
        raise ParseError(f"bytes are not valid {codec}", f"byte offset {exc.start}", "102") from None
