"""How to install one of fgvc's extras, said for the way this fgvc was installed.

``pip install 'fgvc[serve]'`` works only where fgvc comes from a package index. From a clone
installed with ``pip install -e .`` the command is ``pip install -e '<clone>[serve]'``; from a wheel
or folder, that path with the extra; from a source tree on ``PYTHONPATH`` (not installed), the
clone's editable install. The installer's own record tells which (PEP 610, ``direct_url.json`` in
the installed distribution). Every hint also names the extra's packages, which ``pip install``
accepts in any case. Standard library only: the CLI's ``--help`` uses it without importing torch.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DIST = "fgvc"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # <root>/src/fgvc/install.py -> <root>


def _distribution():
    try:
        return metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return None


def _url_path(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _source_tree(root: Path) -> bool:
    """Whether ``root`` is a checkout of fgvc: a pyproject.toml naming the project fgvc."""
    pyproject = root / "pyproject.toml"
    try:
        return bool(re.search(r'^name\s*=\s*"fgvc"\s*$', pyproject.read_text(encoding="utf-8"), re.M))
    except OSError:
        return False


def install_target(dist=None, source_root: Path = SOURCE_ROOT) -> tuple[str, str]:
    """(how fgvc is installed, what to pass to pip): ``("editable", clone folder)``, ``("folder", folder)``,
    ``("file", wheel or archive path)``, ``("index", "fgvc")``, ``("source", clone folder)`` when this
    code runs from a checkout (``source_root``; installed editable or on PYTHONPATH), or ``("unknown",
    "fgvc")``. ``dist`` is an importlib.metadata distribution (default: the installed fgvc, if any)."""
    dist = _distribution() if dist is None else dist
    if _source_tree(source_root):  # this code runs from a checkout: install that one (it may not be the
        return "source", str(source_root)  # installed fgvc, e.g. with the checkout's src on PYTHONPATH)
    if dist is None:
        return "unknown", DIST
    text = dist.read_text("direct_url.json")
    if not text:
        return "index", DIST
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return "unknown", DIST
    path = _url_path(record.get("url", ""))
    if path is None:  # a VCS or remote archive URL: pip takes it back as it is
        return "unknown", DIST
    if "dir_info" in record:
        return ("editable" if record["dir_info"].get("editable") else "folder"), str(path)
    return "file", str(path)


def extra_packages(extra: str, dist=None) -> list[str]:
    """The requirement strings of ``extra`` (e.g. ``fastapi>=0.165``), from the installed metadata, else
    from the source tree's pyproject.toml; [] when neither says."""
    dist = _distribution() if dist is None else dist
    marker = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    if dist is not None:
        return [r.split(";")[0].strip() for r in (dist.requires or []) if ";" in r and marker.search(r.split(";", 1)[1])]
    try:
        text = (SOURCE_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return []
    found = re.search(rf"^{re.escape(extra)}\s*=\s*\[(.*?)\]", text, re.M | re.S)
    return re.findall(r'"([^"]+)"', found.group(1)) if found else []


def install_command(extra: str, dist=None, source_root: Path = SOURCE_ROOT) -> str:
    """The pip command that adds ``extra`` to this fgvc, plus the bare packages as an alternative:
    "pip install -e '/path/to/fgvc[serve]', or pip install fastapi python-multipart uvicorn"."""
    how, target = install_target(dist, source_root)
    if how in ("editable", "source"):
        cmd = f"pip install -e '{target}[{extra}]'"
    elif how in ("folder", "file"):
        cmd = f"pip install '{target}[{extra}]'"
    else:
        cmd = f"pip install '{DIST}[{extra}]'"
    packages = [re.split(r"[<>=!~ \[]", p, maxsplit=1)[0] for p in extra_packages(extra, dist)]
    return f"{cmd}, or pip install {' '.join(packages)}" if packages else cmd


__all__ = ["extra_packages", "install_command", "install_target"]
