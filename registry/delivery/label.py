"""The parcel's label: a shipment token as a QR code, and a printable 100 x 150 mm label.

The QR code is drawn by ``segno`` (a maintained encoder, ISO/IEC 18004), never by this project.
Its error correction is level Q (about 25 % of the codewords can be restored), fixed rather than
boosted so that every label is made alike: a parcel label gets scuffed, creased, wet, or partly
covered by tape, which level M (15 %, the usual choice for screens and clean print) does not
survive as well, while level H (30 %) would need a larger symbol for no reading gain that matters
here. A typical token (365 characters in alphanumeric mode) then fits version 14, 73 modules
(81 with the 4-module quiet zone); at the label's 70 mm that is 0.86 mm a module, six dots of a
203 dpi thermal printer and easy for a phone camera at arm's length. The largest token
(:data:`~registry.delivery.token.MAX_TOKEN_SIZE`) still fits with modules over 0.7 mm.

The label is SVG (sizes in millimetres, so it prints at scale from any viewer or label
printer driver) with the QR code and, beside it in text, what the courier matches against the
parcel and the app's answer: the waybill, the order, the operator, the masked MSISDN (by
:func:`registry.subscribers.mask_msisdn`, the one masking rule), the courier company and the
token's expiry. The token carries no document number, and neither does the label.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

import segno

from registry.delivery.errors import DeliveryError
from registry.delivery.token import ShipmentToken
from registry.subscribers import mask_msisdn

ERROR_LEVEL: Final = "Q"
"""QR error-correction level of every label (see the module docstring for why)."""

QUIET_ZONE: Final = 4
"""Light modules around the symbol, as ISO/IEC 18004 requires."""

PNG_SCALE: Final = 10
"""Pixels per module of a PNG QR code (at :data:`PNG_DPI`, 0.85 mm a module)."""

PNG_DPI: Final = 300
"""Resolution recorded in a PNG QR code, so that it prints at its intended size."""

SVG_MODULE_MM: Final = 0.85
"""Millimetres per module of an SVG QR code (the PNG's size at its resolution)."""

LABEL_WIDTH_MM: Final = 100
LABEL_HEIGHT_MM: Final = 150
QR_SIZE_MM: Final = 70
"""Side of the QR code on the label, quiet zone included."""

QR_FORMATS: Final = frozenset({".svg", ".png"})
"""File extensions :func:`write_qr` writes."""

LABEL_FORMATS: Final = frozenset({".svg"})
"""File extensions :func:`write_label` writes."""

_SVG_NS: Final = "http://www.w3.org/2000/svg"
_FONT: Final = "'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', sans-serif"
_TIME: Final = "%Y-%m-%d %H:%M UTC"


class LabelFormatError(DeliveryError):
    """A QR code or label was asked for in a format that is not written."""


def qr_code(text: str) -> segno.QRCode:
    """Return the QR code of a token's text form, at level Q."""
    return segno.make_qr(text, error=ERROR_LEVEL, boost_error=False)


def _suffix(path: Path, formats: frozenset[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise LabelFormatError(
            f"{what} {path.name!r}: the file name must end in {' or '.join(sorted(formats))}"
        )
    return suffix


def check_qr_path(path: Path) -> None:
    """Raise ``LabelFormatError`` unless ``path`` names a QR format :func:`write_qr` writes."""
    _suffix(path, QR_FORMATS, "QR code")


def check_label_path(path: Path) -> None:
    """Raise ``LabelFormatError`` unless ``path`` names a format :func:`write_label` writes."""
    _suffix(path, LABEL_FORMATS, "label")


def write_qr(token: ShipmentToken, path: Path) -> None:
    """Write the token's QR code to ``path``: SVG or PNG by its extension."""
    code = qr_code(token.text)
    if _suffix(path, QR_FORMATS, "QR code") == ".png":
        code.save(str(path), kind="png", scale=PNG_SCALE, border=QUIET_ZONE, dpi=PNG_DPI)
    else:
        code.save(str(path), kind="svg", scale=SVG_MODULE_MM, unit="mm", border=QUIET_ZONE)


def _qr_element(code: segno.QRCode, x: float, y: float, size: float) -> ET.Element:
    buffer = io.BytesIO()
    code.save(
        buffer,
        kind="svg",
        border=QUIET_ZONE,
        xmldecl=False,
        omitsize=True,
        svgclass=None,
        lineclass=None,
    )
    # segno's own output, not outside input: the standard parser is safe for it.
    element = ET.fromstring(buffer.getvalue())  # noqa: S314
    element.set("x", f"{x:g}")
    element.set("y", f"{y:g}")
    element.set("width", f"{size:g}")
    element.set("height", f"{size:g}")
    element.set("shape-rendering", "crispEdges")
    return element


def _text(parent: ET.Element, x: float, y: float, size: float, content: str, **attrs: str) -> None:
    element = ET.SubElement(
        parent,
        f"{{{_SVG_NS}}}text",
        {"x": f"{x:g}", "y": f"{y:g}", "font-size": f"{size:g}", **attrs},
    )
    element.text = content


def _fitted_size(value: str, width_mm: float, largest: float) -> float:
    """Font size at which ``value`` fits ``width_mm`` (a wide glyph is 1 em, others about 0.6)."""
    ems = sum(1.0 if ord(character) >= 0x2E80 else 0.6 for character in value)
    return min(largest, width_mm / ems) if ems else largest


def label_svg(token: ShipmentToken) -> bytes:
    """Return the printable label of ``token`` as an SVG document, 100 x 150 mm."""
    fields = token.fields
    ET.register_namespace("", _SVG_NS)
    root = ET.Element(
        f"{{{_SVG_NS}}}svg",
        {
            "width": f"{LABEL_WIDTH_MM}mm",
            "height": f"{LABEL_HEIGHT_MM}mm",
            "viewBox": f"0 0 {LABEL_WIDTH_MM} {LABEL_HEIGHT_MM}",
            "font-family": _FONT,
        },
    )
    ET.SubElement(
        root,
        f"{{{_SVG_NS}}}rect",
        {"width": "100%", "height": "100%", "fill": "#fff"},
    )
    middle = LABEL_WIDTH_MM / 2
    _text(root, middle, 10, 5, "实名制电话卡 · 请当面核验", **{"text-anchor": "middle"})
    _text(
        root, middle, 15.5, 3.2, "Real-name SIM card: verify at the door",
        **{"text-anchor": "middle"},
    )  # fmt: skip
    left = (LABEL_WIDTH_MM - QR_SIZE_MM) / 2
    root.append(_qr_element(qr_code(token.text), left, 18, QR_SIZE_MM))
    rows = (
        ("运单 Waybill", fields.waybill),
        ("订单 Order", fields.order_id),
        ("运营商 Operator", fields.operator),
        ("号码 MSISDN", mask_msisdn(fields.msisdn_masked)),
        ("快递 Courier", fields.courier),
        ("有效期至 Valid until", fields.expires_at.strftime(_TIME)),
    )
    y: float = 18 + QR_SIZE_MM + 8
    for caption, value in rows:
        _text(root, 8, y, 3.2, caption, fill="#444")
        # An order id may be 64 characters: it shrinks to stay on the label.
        size = _fitted_size(value, LABEL_WIDTH_MM - 44 - 4, 4.2)
        _text(root, 44, y, size, value, **{"font-weight": "bold"})
        y += 7.5
    _text(
        root, middle, LABEL_HEIGHT_MM - 6, 2.8,
        "用快递员应用扫码并核对收件人证件 · Scan with the courier app, check the ID",
        **{"text-anchor": "middle", "fill": "#444"},
    )  # fmt: skip
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_label(token: ShipmentToken, path: Path) -> None:
    """Write the token's printable label to ``path`` (SVG)."""
    check_label_path(path)
    path.write_bytes(label_svg(token))
