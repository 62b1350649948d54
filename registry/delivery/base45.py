"""Base45 (RFC 9285): binary data as text in the QR code alphanumeric alphabet.

Every two bytes become three characters of ``0-9A-Z $%*+-./:`` (a trailing single byte two),
so a QR code can hold the text in alphanumeric mode at 5.5 bits a character: about 8.25 bits of
QR capacity per byte, against 10.7 for base64 (which forces byte mode). EU Digital COVID
Certificates travel this way. Decoding is strict, as RFC 9285 section 4.3 asks: characters
outside the alphabet, a length of 1 modulo 3, and chunks whose value does not fit are refused,
so each byte string has exactly one encoding.
"""

from __future__ import annotations

from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
"""The 45 characters, in value order."""

_VALUES: Final = {character: value for value, character in enumerate(ALPHABET)}


class Base45Error(ValueError):
    """Raised when text is not strict base45."""


def b45encode(data: bytes) -> str:
    """Return the base45 text of ``data``."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        value = data[i] * 256 + data[i + 1]
        value, c = divmod(value, 45)
        e, d = divmod(value, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (ALPHABET[c], ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Return the bytes ``text`` encodes, refusing anything ``b45encode`` would not produce."""
    if len(text) % 3 == 1:
        raise Base45Error("base45 text length must not be 1 modulo 3")
    try:
        values = [_VALUES[character] for character in text]
    except KeyError as error:
        raise Base45Error(f"{error.args[0]!r} is not a base45 character") from None
    out = bytearray()
    full = len(values) - len(values) % 3
    for i in range(0, full, 3):
        value = values[i] + values[i + 1] * 45 + values[i + 2] * 45 * 45
        if value > 0xFFFF:
            raise Base45Error("base45 triple exceeds two bytes")
        out += value.to_bytes(2, "big")
    if full < len(values):
        value = values[full] + values[full + 1] * 45
        if value > 0xFF:
            raise Base45Error("base45 pair exceeds one byte")
        out.append(value)
    return bytes(out)
