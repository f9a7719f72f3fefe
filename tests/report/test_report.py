"""`fgvc report` on a runs folder of tiny real runs (tests/report/conftest.py): what the page shows."""

import base64
import re
from pathlib import Path

import pytest
from report_helpers import ATTACK_IMAGES

from fgvc.errors import UserError
from fgvc.report import collect_runs, write_report
from fgvc.report.collect import config_differences, settings
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
    assert config_differences([{"settings": settings("classifier", c)} for c in same]) == []
    changed = [same[0], {"train": {"lr": 0.1, "milestones": [5]}, "out": "elsewhere"}]  # out: not a setting
    assert config_differences([{"settings": settings("classifier", c)} for c in changed]) == ["train.milestones"]
    # a key an older run's config.yaml lacks reads as its default, not as a difference
    assert config_differences([{"settings": settings("classifier", c)} for c in
                               [{"train": {"epochs": 100}}, {"train": {}}]]) == []
    # train.channels_last became a word: an old config.yaml's false, a new one's 'false' and a run from before
    # the key (it trained NCHW) are the same setting; auto is not
    old_bool, new_word, before = {"train": {"channels_last": False}}, {"train": {"channels_last": "false"}}, {"train": {}}
    assert config_differences([{"settings": settings("classifier", c)} for c in (old_bool, new_word, before)]) == []
    auto = {"train": {"channels_last": "auto"}}
    assert config_differences([{"settings": settings("classifier", c)} for c in (old_bool, auto)]) == \
        ["train.channels_last"]


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


def test_a_large_photo_like_picture_keeps_at_least_85_percent_of_its_width(tmp_path):
    # an attack gallery (1400 px of photos and 7-pt titles): halving it left ~5-px letters
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(1).integers(0, 255, (1200, 1400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "gallery.png")
    mime, data, smaller = picture_for_html(tmp_path / "gallery.png")
    assert smaller and mime == "image/jpeg"
    assert Image.open(io.BytesIO(data)).width >= 0.85 * 1400


def test_collect_runs_skips_a_damaged_file_that_is_not_a_run(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.json").write_text("{not json")
    assert collect_runs(tmp_path) == []
    with pytest.raises(UserError, match="no run directories"):
        write_report(tmp_path)


def test_report_on_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        write_report(tmp_path / "nope")


def _history(epochs: int, first_loss: float = 90.0) -> list[dict]:
    return [{"epoch": e, "val_loss": first_loss / e ** 3, "val_acc": 0.2 + 0.1 * e} for e in range(1, epochs + 1)]


def test_comparison_curves_show_a_one_epoch_run_on_integer_epochs_and_a_log_loss_axis():
    from fgvc.report.figures import accuracy_bars, curves_figure

    entries = [{"name": "long", "history": _history(5), "unfinished": None},
               {"name": "one-epoch", "history": _history(1), "unfinished": None}]
    fig = curves_figure(entries)
    loss, acc = fig.axes[:2]
    one = [line for line in acc.lines if line.get_label() == "one-epoch"]
    assert len(one) == 1 and len(one[0].get_xdata()) == 1 and one[0].get_marker() == "o"  # a visible dot
    assert loss.get_yscale() == "log"  # an epoch-1 loss of 90 does not flatten the rest
    fig.canvas.draw()
    ticks = [t for t in acc.get_xticks() if acc.get_xlim()[0] <= t <= acc.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert "Validation loss and accuracy per epoch" in fig._suptitle.get_text()
    assert accuracy_bars([{"name": "x", "metrics": {"test_acc": 0.5}}], Path("unused.png")) is None  # no 1-bar chart


def _fake_row(folder: Path, row: str, dataset: str, test_acc: float) -> None:
    from fgvc import runs

    runs.write_json_atomic(folder / row / "metrics.json", {
        "test_acc": test_acc, "epochs_run": 1, "seconds": 1.0, "device": "cpu",
        "protocol": {"task": "classifier", "dataset": dataset}})


def test_study_shows_paper_ours_and_difference_where_the_dataset_matches(tmp_path):
    from fgvc.experiments.study import write_table

    study = tmp_path / "runs" / "table4_tricks"  # the shipped study's folder name: the seed's Table 4
    _fake_row(study, "baseline", "cub200", 0.7)
    _fake_row(study, "label_smoothing", "synthbirds", 0.6)
    write_table(study, ["baseline", "label_smoothing"], ["test_acc"], "Table 4 - training tricks")
    md = write_report(tmp_path / "runs").read_text()
    section = _section(md, "### Paper / ours / difference")
    assert _table_row(section, "baseline") == ["baseline", "0.7485", "0.7000", "-0.0485"]
    assert _table_row(section, "label_smoothing") == ["label_smoothing", "0.7685", "0.6000", "n/a"]
    assert "seed Table 4" in section and "label_smoothing on synthbirds" in section
    assert "## Study: Table 4 - training tricks" in md
