"""The parcel's printed label as chromium's fake camera films it.

The label is the store's own (``registry.delivery.label.label_svg``, what ``realname store
sign-shipment --label`` writes), drawn by a chromium the caller launched (as
tests/system/test_shipment_label.py renders it), and turned into a still Y4M video with Pillow
for ``--use-file-for-fake-video-capture``: the courier's page then reads the token from the
label's QR code among its text, rules and captions, as a phone's camera would.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser

from registry.delivery.label import label_svg
from registry.delivery.token import decode_text, decode_token

# 100 x 150 mm at 96 px per inch (CSS pixels), drawn at twice that as a phone's camera sees it.
LABEL_CSS_PX = (378, 567)
SCALE = 2
FRAMES = 10


def render_svg(browser: Browser, svg: Path, width_px: int, height_px: int) -> Image.Image:
    """The SVG file as chromium draws it at twice its CSS pixels (a phone screen, a 200 dpi
    printer), as an image."""
    page = browser.new_page(
        viewport={"width": width_px, "height": height_px}, device_scale_factor=SCALE
    )
    try:
        page.goto(svg.as_uri())
        png = page.screenshot(full_page=False)
    finally:
        page.close()
    return Image.open(io.BytesIO(png))


def label_image(browser: Browser, token_text: str, work_dir: Path) -> Image.Image:
    """The printed label of the token ``token_text`` (``RN1:…``) as chromium draws it."""
    svg = work_dir / "label.svg"
    svg.write_bytes(label_svg(decode_token(decode_text(token_text))))
    return render_svg(browser, svg, *LABEL_CSS_PX)


def _studio_range(plane: Image.Image, top: int) -> bytes:
    # Pillow's YCbCr is full range (0-255); a Y4M camera frame is read as video range
    # (luma 16-235, chroma 16-240), as chromium's own fake frames are.
    return plane.point(lambda value: 16 + value * (top - 16) // 255).tobytes()


def y4m_video(image: Image.Image, path: Path) -> Path:
    """A still Y4M (4:2:0, ``FRAMES`` frames at 10 fps) of ``image``, written to ``path``."""
    rgb = image.convert("RGB")
    # 4:2:0 needs even dimensions: drop a last odd row or column.
    width, height = rgb.width & ~1, rgb.height & ~1
    luma, blue, red = rgb.crop((0, 0, width, height)).convert("YCbCr").split()
    half = (width // 2, height // 2)
    frame = (
        b"FRAME\n"
        + _studio_range(luma, 235)
        + _studio_range(blue.resize(half, Image.Resampling.BOX), 240)
        + _studio_range(red.resize(half, Image.Resampling.BOX), 240)
    )
    header = f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + frame * FRAMES)
    return path


def label_video(browser: Browser, token_text: str, work_dir: Path) -> Path:
    """The Y4M video of the token's printed label, in ``work_dir``, for the fake camera."""
    return y4m_video(label_image(browser, token_text, work_dir), work_dir / "label.y4m")
