"""Real-browser fixtures: Debian's headless Chromium driven by Playwright.

Playwright's own browser download is not reachable from CI, so the browser is the system
Chromium (``apt-get install -y --no-install-recommends chromium``), started through
``executable_path``. ``FGVC_CHROMIUM`` names another binary. Every fixture here skips the test
with its reason when the playwright package or a Chromium binary is missing, or when Chromium
does not start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CANDIDATES = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")


def find_chromium() -> str | None:
    """Path of the Chromium binary: ``$FGVC_CHROMIUM``, else the first of CANDIDATES found, else None."""
    env = os.environ.get("FGVC_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium for one test module (skips with its reason when unavailable). Not for
    the whole session: a live Playwright session (its greenlet and event loop in the main thread) left
    open under the rest of the suite hung a later test whose DataLoader forked workers."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install -e '.[dev]'")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium binary found: apt-get install -y --no-install-recommends chromium "
                    "(or set FGVC_CHROMIUM to one)")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        except Error as exc:
            pytest.skip(f"Chromium at {exe} did not start: {str(exc).splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh 1280x900 page in its own context; console errors are collected in ``page.console_errors``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.console_errors = []
    pg.on("console", lambda msg: pg.console_errors.append(msg.text) if msg.type == "error" else None)
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """Where a browser test saves its screenshots (a per-test tmp folder)."""
    out = tmp_path / "screenshots"
    out.mkdir()
    return out
