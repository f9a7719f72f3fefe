"""report.html in a real browser (Debian's Chromium through Playwright, tests/browser/conftest.py):
opened from file:// with nothing beside it, every picture decodes and every section is there."""

import shutil

import pytest

from fgvc.report import write_report

SECTIONS = ["Classifier runs", "Comparison figures", "Unfinished or failed runs", "GAN runs",
            "Evaluations (fgvc eval)", "Run a"]


@pytest.fixture
def report_html(tiny_run, tiny_synthbirds_root, tmp_path):
    """report.html over copies of a tiny real run (evaluated and attacked), a changed copy, a run folder
    without metrics and a 2-iteration GAN run, written into a folder of its own and moved away from
    the runs, so that only embedded pictures can show."""
    from fgvc.evaluation import eval_run
    from fgvc.gan import train_gan
    from fgvc.gan.config import GanConfig, GanDataConfig
    from fgvc.robust.run import attack_run

    runs = tmp_path / "runs"
    a, b = shutil.copytree(tiny_run, runs / "a"), shutil.copytree(tiny_run, runs / "b")
    for stale in ("attack", "explain"):  # other tests may have analysed the shared run
        shutil.rmtree(a / stale, ignore_errors=True)
    config = (b / "config.yaml").read_text()
    (b / "config.yaml").write_text(config.replace("label_smoothing: 0.0", "label_smoothing: 0.1"))
    eval_run(a, progress=False)
    attack_run(a, "fgsm", [0.0, 0.1], limit=8, device="cpu", progress=False)
    (runs / "broken").mkdir()
    shutil.copy(a / "config.yaml", runs / "broken" / "config.yaml")
    train_gan(GanConfig(data=GanDataConfig(name="synthbirds", root=str(tiny_synthbirds_root), image_size=32,
                                           num_workers=0), iterations=2, batch_size=8, n_dis=1, ch=8, z_dim=16,
                        sample_every=0, checkpoint_every=2, sample_classes=4, device="cpu", out=str(runs)),
              progress=False)
    write_report(runs, tmp_path / "report")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "report" / "report.html", alone / "report.html")
    shutil.rmtree(runs)  # the page must not need them
    return alone / "report.html"


def test_report_renders_in_chromium_with_every_picture(page, report_html, screenshot_dir):
    page.goto(report_html.as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 6  # curves (x2), comparison (x2), confusion, reliability, attack curve, GAN grid
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert broken == []
    headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    for section in SECTIONS:
        assert section in headings, (section, headings)
    assert any(h.startswith("Attack FGSM on a") for h in page.evaluate(
        "Array.from(document.querySelectorAll('h3')).map(h => h.textContent)"))
    assert "`" not in page.inner_text("body")
    assert page.console_errors == []
    page.screenshot(path=str(screenshot_dir / "report.png"), full_page=True)
    assert (screenshot_dir / "report.png").stat().st_size > 10_000
