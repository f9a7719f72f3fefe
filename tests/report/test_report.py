"""`fgvc report` on a runs folder of tiny real runs (tests/report/conftest.py): what the page shows."""

import base64
import re

import pytest
from report_helpers import ATTACK_IMAGES

from fgvc.errors import UserError
from fgvc.report import collect_runs, write_report
from fgvc.report.collect import config_differences
from fgvc.report.page import MAX_EMBED_BYTES, picture_for_html, render

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(report_runs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report_out")  # not the runs folder: links must work from elsewhere
    md = write_report(report_runs["root"], out)
    return {"md": md.read_text(), "html": (out / "report.html").read_text(), "out": out}


def _section(text: str, heading: str) -> str:
    """The Markdown from ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading):]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.M)]
    return heading + (rest[:ends[0]] if ends else rest)


def _embedded(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img[^>]*src="data:image/[a-z]+;base64,([^"]+)"', html)]


def _table_row(md: str, name: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def test_html_embeds_each_runs_own_pictures_as_png_data(report, report_runs):
    images = _embedded(report["html"])
    assert images and all(img.startswith(PNG) for img in images)  # every data URI decodes to a PNG
    for run in ("plain", "smoothed"):
        assert (report_runs[run] / "curves.png").read_bytes() in images, run
    assert (report_runs["plain"] / "confusion_test.png").read_bytes() in images
    assert (report_runs["plain"] / "attack" / f"fgsm_n{ATTACK_IMAGES}.png").read_bytes() in images
    # nothing but data URIs: the page needs no file beside it
    assert not re.findall(r'<img[^>]*src="(?!data:)', report["html"])
    assert "`" not in report["html"]


def test_markdown_links_the_pictures_relative_to_where_it_is_written(report, report_runs):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report["md"])
    targets = {(report["out"] / link).resolve() for link in links}
    assert (report_runs["plain"] / "curves.png").resolve() in targets
    assert (report_runs["plain"] / "explain" / "grid.png").resolve() in targets
    assert all(t.is_file() for t in targets)


def test_config_column_shows_exactly_the_keys_that_differ(report):
    header = _table_row(report["md"], "run")
    column = next(i for i, h in enumerate(header) if h.startswith("config"))
    assert _table_row(report["md"], "smoothed")[column] == "aug.label_smoothing=0.1"
    assert _table_row(report["md"], "plain")[column] == "aug.label_smoothing=0.0"
    same = [{"train": {"lr": 0.1, "milestones": [9]}, "out": "runs"}] * 2
    assert config_differences([{"config": c} for c in same]) == []
    changed = [same[0], {"train": {"lr": 0.1, "milestones": [5]}, "out": "runs"}]
    assert config_differences([{"config": c} for c in changed]) == ["train.milestones"]


def test_a_run_without_metrics_is_listed_as_failed_with_its_last_epoch(report):
    section = _section(report["md"], "## Unfinished or failed runs")
    row = _table_row(section, "crashed")
    assert row[1] == "classifier" and "no metrics.json" in row[2] and "last finished epoch 2 of 1" in row[2]
    assert "| crashed |" not in _section(report["md"], "## Classifier runs")


def test_gan_run_has_its_own_section_with_its_sample_grid(report, report_runs):
    gan = report_runs["gan"]
    section = _section(report["md"], "## GAN runs")
    assert f"| {gan.name} | finished | 2 of 2 |" in section
    assert gan.name not in _section(report["md"], "## Classifier runs")
    assert (gan / "samples" / "iter_000002.png").read_bytes() in _embedded(report["html"])
    assert "zeroshot-x" in _section(report["md"], "## CLIP, zero-shot and probe runs")


def test_attack_section_names_the_attack_its_eps_and_image_count(report):
    section = _section(report["md"], f"### Attack FGSM on plain (fgsm_n{ATTACK_IMAGES})")
    assert "Attack: **fgsm**" in section and f"images: **{ATTACK_IMAGES}**" in section
    assert "eps (2 values, on [0, 1] pixels): **0, 0.1**" in section
    assert [r[0] for r in (_table_row(section, e) for e in ("0", "0.1"))] == ["0", "0.1"]


def test_comparison_figures_are_drawn_for_two_runs(report):
    assert "![Validation loss (log scale) and accuracy per epoch" in report["md"]
    assert (report["out"] / "report_curves.png").read_bytes() in _embedded(report["html"])
    assert (report["out"] / "report_test_acc.png").is_file()


def test_large_pictures_are_made_smaller_for_the_html_and_the_page_says_so(tmp_path):
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (400, 600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > MAX_EMBED_BYTES
    mime, data, smaller = picture_for_html(tmp_path / "big.png")
    assert smaller and len(data) <= MAX_EMBED_BYTES and mime in ("image/png", "image/jpeg")
    html, embedded, downscaled = render("# t\n\n![big](big.png)\n", "t", tmp_path)
    assert (embedded, downscaled) == (1, 1) and "made smaller" in html


def test_collect_runs_skips_a_damaged_file_that_is_not_a_run(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.json").write_text("{not json")
    assert collect_runs(tmp_path) == []
    with pytest.raises(UserError, match="no run directories"):
        write_report(tmp_path)


def test_report_on_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        write_report(tmp_path / "nope")
