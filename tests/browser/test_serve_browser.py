"""`fgvc serve` in a real browser: upload a generated bird, see the top-5 and the Grad-CAM overlay, move the
FGSM slider and see the attacked image; a text file then clears the result and shows the server's sentence."""

import re
import shutil
import subprocess
import sys
import time

import pytest

from fgvc import runs

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """`fgvc serve` (a subprocess, as a user starts it) on the tiny run at 64 px, on a free port: its URL."""
    run = tmp_path_factory.mktemp("browser") / tiny_run.name
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("image_size: 32\n", "image_size: 64\n", 1))
    proc = subprocess.Popen([sys.executable, "-m", "fgvc", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # "serving RUN at http://127.0.0.1:PORT/  (Ctrl-C stops)"
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"fgvc serve did not print its URL: {line!r} {proc.stdout.read() if proc.poll() else ''}"
        yield match.group(0), run
    finally:
        proc.terminate()
        proc.wait(10)


def test_upload_shows_top5_overlay_and_the_attack_moves_with_the_slider(page, served, tiny_synthbirds_root,
                                                                        screenshot_dir, tmp_path):
    url, run = served
    start = time.monotonic()
    page.goto(url)
    page.wait_for_function("document.getElementById('title').textContent !== 'fgvc demo'")
    assert page.inner_text("#title") == "Generated birds · ResNet-18"  # not the run's folder name
    image = sorted((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]
    page.set_input_files("#file", str(image))

    page.wait_for_selector("#top li")
    labels = page.locator("#top .name").all_inner_texts()
    assert len(labels) == len(runs.load_class_names(run)) == 4  # 4 classes: the top-5 is all of them
    percents = [float(p.rstrip("%")) for p in page.locator("#top .p").all_inner_texts()]
    assert percents == sorted(percents, reverse=True) and abs(sum(percents) - 100) < 0.5
    page.wait_for_function("document.getElementById('cam').naturalWidth === 64")
    assert page.inner_text("#camcap").startswith("Grad-CAM for: ")
    assert page.locator("#legend .ramp").evaluate("e => getComputedStyle(e).backgroundImage").startswith(
        "linear-gradient")
    page.wait_for_function("document.getElementById('adv').naturalWidth === 64")
    page.wait_for_function("/at eps 0\\.0157 \\(4\\/255\\)/.test(document.getElementById('advsummary').textContent)")
    page.screenshot(path=str(screenshot_dir / "serve_result.png"), full_page=True)

    # the slider: a new budget asks the server again and the page shows that budget's result
    first_adv = page.get_attribute("#adv", "src")
    page.locator("#eps").fill("16")
    page.wait_for_function("/at eps 0\\.0627 \\(16\\/255\\)/.test(document.getElementById('advsummary').textContent)")
    assert page.get_attribute("#adv", "src") != first_adv
    assert page.locator("#advtop li").count() == 4 and page.locator("#advtop .move").count() == 4
    page.screenshot(path=str(screenshot_dir / "serve_eps16.png"), full_page=True)

    # a failed upload: the previous result goes, the server's 415 sentence shows
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#err", state="visible")
    assert "not an image" in page.inner_text("#err")
    assert not page.is_visible("#out") and page.locator("#top li").count() == 0
    assert page.get_attribute("#cam", "src") is None
    page.screenshot(path=str(screenshot_dir / "serve_error.png"), full_page=True)
    assert not page.console_errors or all("415" in e for e in page.console_errors)
    assert time.monotonic() - start < 30
