"""QR-code labels for node enclosures: one PNG per device, the text readable under the code."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.constants import ERROR_CORRECT_Q

from host_tools.field.inventory import Device

LABEL_WIDTH_PX = 600  # ~50 mm at 300 dpi: fits the lid of a small IP65 box


def label_payload(device: Device) -> str:
    """What the QR code holds: compact JSON a phone app or a script can read."""
    return json.dumps(
        {"id": device.device_id, "site": device.site_id, "kind": device.kind}, separators=(",", ":")
    )


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

# Where fonts live on the laptops technicians use (Debian/Ubuntu, macOS, Windows), searched at
# run time. Latin fonts first (ids and sites are ASCII); for Thai, Noto Sans Thai and Debian's
# fonts-thai-tlwg (Garuda, Loma, Waree ...), macOS Thonburi, Windows Leelawadee UI / Tahoma.
FONT_DIRS: list[Path] = [
    Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts",
    Path.home() / ".local/share/fonts", Path("/Library/Fonts"), Path("/System/Library/Fonts"),
    Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts",
]  # fmt: skip
FONT_NAMES = (
    "DejaVuSans-Bold", "DejaVuSans", "LiberationSans-Bold",
    "NotoSansThai-Bold", "NotoSansThai-Regular", "NotoSansThaiUI-Bold", "NotoSansThaiUI-Regular",
    "Garuda-Bold", "Garuda", "Loma-Bold", "Loma", "Waree-Bold", "Waree", "Sarabun-Bold",
    "Umpush-Bold", "Kinnari-Bold", "TlwgTypo-Bold", "Thonburi", "LeelaUIb", "LeelawUI",
    "tahomabd", "tahoma",
)  # fmt: skip
THAI_FONT_HINT = (
    "install a Thai font: 'sudo apt install fonts-thai-tlwg' (Debian/Ubuntu) or Noto Sans "
    "Thai, then run 'cityedge node label' again"
)


@functools.cache
def _font_files() -> dict[str, Path]:
    """Font file stem → path, for every font file under FONT_DIRS (searched once)."""
    found: dict[str, Path] = {}
    for folder in FONT_DIRS:
        with contextlib.suppress(OSError):
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in (".ttf", ".otf", ".ttc"):
                    found.setdefault(path.stem, path)
    return found


@functools.cache
def _load(path: Path, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return None


def _has_glyphs(font: Font, text: str) -> bool:
    """True if no letter of `text` comes out as the font's missing-glyph box (its .notdef,
    which is what an unmapped character such as U+10FFFD draws). Combining marks are drawn
    with their base letter and are not judged alone."""
    missing = font.getmask("\U0010fffd")
    box = (missing.size, bytes(missing))
    for ch in set(text):
        if ch.isspace() or unicodedata.category(ch).startswith("M"):
            continue
        mask = font.getmask(ch)
        if (mask.size, bytes(mask)) == box:
            return False
    return True


def font_for(text: str, size: int) -> Font | None:
    """The first font in FONT_NAMES (found at run time) that draws every letter of `text`;
    None if no installed font does (see THAI_FONT_HINT)."""
    files = _font_files()
    for name in FONT_NAMES:
        font = _load(files[name], size) if name in files else None
        if font is not None and _has_glyphs(font, text):
            return font
    default = ImageFont.load_default(size)
    return default if _has_glyphs(default, text) else None


@dataclass(frozen=True)
class Label:
    image: Image.Image
    warnings: tuple[str, ...] = ()


def render(device: Device) -> Label:
    """The label image, and what could not be printed on it (a name no font here can draw)."""
    # Error correction Q (25 %): the label survives scratches and sun on an outdoor enclosure.
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_Q, box_size=10, border=4)
    qr.add_data(label_payload(device))
    qr.make(fit=True)
    code = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    code = code.resize((LABEL_WIDTH_PX, LABEL_WIDTH_PX), Image.Resampling.NEAREST)
    lines: list[tuple[str, Font]] = []
    warnings: list[str] = []
    for text, size in ((device.device_id, 40), (f"{device.kind} · {device.site_id}", 30),
                       (device.name or "", 30)):  # fmt: skip
        if not text:
            continue
        font = font_for(text, size)
        if font is None:  # boxes help nobody: leave the line out and say so
            warnings.append(
                f"{device.device_id}: no installed font can draw {text!r}; the "
                f"label is written without it: {THAI_FONT_HINT}"
            )
            continue
        lines.append((text, font))
    line_h = [52, 40, 40]
    text_h = sum(line_h[: len(lines)]) + 20
    label = Image.new("RGB", (LABEL_WIDTH_PX, LABEL_WIDTH_PX + text_h), "white")
    label.paste(code, (0, 0))
    draw = ImageDraw.Draw(label)
    y = LABEL_WIDTH_PX
    for i, (text, font) in enumerate(lines):
        width = draw.textlength(text, font=font)
        draw.text(((LABEL_WIDTH_PX - width) / 2, y), text, fill="black", font=font)
        y += line_h[i]
    return Label(label, tuple(warnings))


def render_label(device: Device) -> Image.Image:
    return render(device).image


def write_label(device: Device, out_dir: Path, warn: Callable[[str], None] | None = None) -> Path:
    """Write `<device id>.png`; `warn` gets what could not be printed (e.g. no Thai font)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{device.device_id}.png"
    label = render(device)
    label.image.save(path, dpi=(300, 300))
    for message in label.warnings:
        if warn is not None:
            warn(message)
    return path
