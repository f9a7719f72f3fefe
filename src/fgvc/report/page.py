"""report.md -> a self-contained report.html: Python-Markdown renders the page, and every picture the
Markdown links (relative to the report's folder) is embedded as a ``data:`` URI (base64), so the
HTML file opens anywhere on its own. Pictures larger than ``MAX_EMBED_BYTES`` are made smaller with
Pillow before embedding (see ``picture_for_html``); the Markdown keeps linking the full-size files.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import markdown

MAX_EMBED_BYTES = 200_000  # per picture in the HTML; larger PNGs are downscaled to fit
_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd}h2{border-bottom:1px solid #eee;margin-top:2em}
div.wide{overflow-x:auto;max-width:100%;margin:1em 0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}
th{background:#f4f4f4;text-align:left}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:.5em 0 1.5em;border:1px solid #eee}
code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-size:90%}
nav.toc{background:#f8f8f8;border:1px solid #e4e4e4;padding:.3em 1em;font-size:14px}
nav.toc ul{margin:.2em 0}footer{color:#666;font-size:13px;margin-top:3em}
"""


def picture_for_html(path: Path, limit: int = MAX_EMBED_BYTES) -> tuple[str, bytes, bool]:
    """(MIME type, bytes, downscaled?) of a picture for embedding: the file itself when it is at most
    ``limit`` bytes; else, with Pillow, the picture flattened onto white and LANCZOS-downscaled as a PNG
    when that fits at no less than 70% of its width (figures with lines and text), otherwise as a
    JPEG for photo-like figures such as CAM grids and attack galleries: lower quality first, never under
    85% of the width (their 7-pt titles stay legible; halving left 5-px letters), over the limit if need be."""
    data = Path(path).read_bytes()
    if len(data) <= limit:
        return "image/png", data, False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgba = img.convert("RGBA")
    except (OSError, ValueError):  # not a picture Pillow reads (damaged): embedded as it is, the browser decides
        return "image/png", data, False
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))

    def encode(scale: float, fmt: str, quality: int = 85) -> bytes:
        size = (max(1, round(flat.width * scale)), max(1, round(flat.height * scale)))
        buf = io.BytesIO()
        resized = flat.resize(size, Image.Resampling.LANCZOS) if scale < 1 else flat
        resized.save(buf, format=fmt, optimize=True, **({"quality": quality} if fmt == "JPEG" else {}))
        return buf.getvalue()

    for scale in (1.0, 0.85, 0.7):
        png = encode(scale, "PNG")
        if len(png) <= limit:
            return "image/png", png, True
    for scale, quality in ((1.0, 85), (1.0, 70), (1.0, 55), (0.85, 55), (0.85, 40)):
        jpeg = encode(scale, "JPEG", quality)
        if len(jpeg) <= limit:
            break
    return "image/jpeg", jpeg, True


def render(markdown_text: str, title: str, base: Path) -> tuple[str, int, int]:
    """(html, pictures embedded, of them downscaled) for ``markdown_text`` whose picture links are relative
    to ``base``; a link to a missing file is left as it is (the browser shows its alt text)."""
    md = markdown.Markdown(extensions=["tables", "toc", "sane_lists"])
    body = md.convert(markdown_text)
    counts = {"embedded": 0, "downscaled": 0}
    cache: dict[str, str] = {}

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(2))
        if src.startswith(("data:", "http:", "https:")):
            return match.group(0)
        path = (base / src).resolve()
        if src not in cache:
            if not path.is_file():
                return match.group(0)
            mime, data, smaller = picture_for_html(path)
            cache[src] = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
            counts["embedded"] += 1
            counts["downscaled"] += smaller
        return match.group(1) + cache[src] + match.group(3)

    body = _IMG_SRC.sub(embed, body)
    body = body.replace("<table>", '<div class="wide"><table>').replace("</table>", "</table></div>")  # scrolls alone
    toc = f'<nav class="toc">{md.toc}</nav>' if getattr(md, "toc", "") else ""
    body = body.replace("</h1>", "</h1>" + toc, 1)
    footer = (f"<footer><p>{counts['embedded']} picture(s) embedded in this file"
              + (f"; {counts['downscaled']} larger than {MAX_EMBED_BYTES // 1000} KB were made smaller for it "
                 "(downscaled or JPEG-encoded with Pillow; report.md links the full-size files)" if counts["downscaled"] else "")
              + ".</p></footer>")
    page = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n{footer}\n</body></html>\n")
    return page, counts["embedded"], counts["downscaled"]
