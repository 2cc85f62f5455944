"""QR-code labels for node enclosures: one PNG per device, the text readable under the code."""

from __future__ import annotations

import json
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.constants import ERROR_CORRECT_Q

from host_tools.inventory import Device

LABEL_WIDTH_PX = 600  # ~50 mm at 300 dpi: fits the lid of a small IP65 box


def label_payload(device: Device) -> str:
    """What the QR code holds: compact JSON a phone app or a script can read."""
    return json.dumps(
        {"id": device.device_id, "site": device.site_id, "kind": device.kind}, separators=(",", ":")
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "LiberationSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def render_label(device: Device) -> Image.Image:
    # Error correction Q (25 %): the label survives scratches and sun on an outdoor enclosure.
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_Q, box_size=10, border=4)
    qr.add_data(label_payload(device))
    qr.make(fit=True)
    code = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    code = code.resize((LABEL_WIDTH_PX, LABEL_WIDTH_PX), Image.Resampling.NEAREST)
    lines = [device.device_id, f"{device.kind} · {device.site_id}"]
    if device.name:
        lines.append(device.name)
    big, small = _font(40), _font(30)
    line_h = [52, 40, 40]
    text_h = sum(line_h[: len(lines)]) + 20
    label = Image.new("RGB", (LABEL_WIDTH_PX, LABEL_WIDTH_PX + text_h), "white")
    label.paste(code, (0, 0))
    draw = ImageDraw.Draw(label)
    y = LABEL_WIDTH_PX
    for i, text in enumerate(lines):
        font = big if i == 0 else small
        width = draw.textlength(text, font=font)
        draw.text(((LABEL_WIDTH_PX - width) / 2, y), text, fill="black", font=font)
        y += line_h[i]
    return label


def write_label(device: Device, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{device.device_id}.png"
    render_label(device).save(path, dpi=(300, 300))
    return path
