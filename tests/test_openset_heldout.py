"""data.classes (train on a subset of the classes) and `fgvc eval RUN --unknown heldout`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc import api, config
from fgvc.cli import main
from fgvc.data import build_dataset
from fgvc.data.subset import heldout_classes, parse_classes
from fgvc.errors import UserError


def test_class_lists_and_their_errors():
    assert parse_classes("first-half", 50) == list(range(25)) and parse_classes("second-half", 50) == list(range(25, 50))
    assert parse_classes("second-half", 5) == [2, 3, 4] and parse_classes("", 50) is None
    assert parse_classes(" 7-9, 0 ,3", 10) == [0, 3, 7, 8, 9]
    assert heldout_classes("first-half", 6) == [3, 4, 5] and heldout_classes("0,2-3", 5) == [1, 4]
    for spec, n, words in [("0-60", 50, "class index 50 is out of range; the dataset has 50 classes, indices 0-49"),
                           ("3-1", 10, "reversed"), ("1,1", 10, "named twice"), ("4", 10, "at least 2"),
                           ("a-b", 10, "not a class list")]:
        with pytest.raises(UserError, match=words):
            parse_classes(spec, n)
    with pytest.raises(UserError, match="every class"):
        heldout_classes("", 10)
    with pytest.raises(UserError, match="data.classes"):  # the config refuses a bad syntax at load time
        config.load(None, ["data.classes=birds"])


def test_a_class_subset_keeps_those_classes_renumbered_with_their_names(cub_root):
    full = {s: build_dataset("synthbirds", cub_root, s, val_fraction=0.25) for s in ("train", "val", "test")}
    for split, every in full.items():
        part = build_dataset("synthbirds", cub_root, split, val_fraction=0.25, classes="1-2")
        assert part.class_names == every.class_names[1:3]
        # exactly the images of classes 1 and 2 (the val draw does not depend on the subset), labels 0 and 1
        assert [(s.path, s.label) for s in part.samples] == \
            [(s.path, s.label - 1) for s in every.samples if s.label in (1, 2)]
    with pytest.raises(UserError, match="class index 4 is out of range; the dataset has 4 classes"):
        build_dataset("synthbirds", cub_root, "train", classes="2-4")


# class folders of the colour dataset, in their sorted order: the first half is learnt, the second held out
COLOURS = {"0_red": (200, 40, 40), "1_green": (40, 190, 50), "2_blue": (40, 60, 210),
           "3_grey": (128, 128, 128), "4_dark": (60, 60, 60), "5_light": (200, 200, 200)}


@pytest.fixture(scope="module")
def colour_root(tmp_path_factory):
    """Noisy 32 px images tinted by class: red, green, blue (learnt) and three greys (the unknowns)."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                shade = rng.uniform(0.7, 1.3)
                pixels = np.clip(np.array(rgb) * shade + rng.normal(0, 25, (32, 32, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def half_run(colour_root, tmp_path_factory):
    """test_resnet trained on the first half of the colour classes (red, green, blue), through `fgvc train`."""
    out = tmp_path_factory.mktemp("half")
    code = main(["train", "model.name=test_resnet", "data.image_size=32", "train.epochs=8", "train.lr=1e-2",
                 "data.num_workers=0", "train.batch_size=8", "train.accelerator=cpu", "train.precision=32-true",
                 "data.val_fraction=0.25", "data.name=folder", f"data.root={colour_root}", "data.classes=first-half",
                 f"out={out}", "--quiet"])
    assert code == 0
    (run,) = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    return run


def test_training_on_a_subset_trains_on_exactly_those_classes(half_run):
    model, names = api.load(half_run)
    assert names == ["0_red", "1_green", "2_blue"]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)  # a head of 3 classes
    sizes = json.loads((half_run / "metrics.json").read_text())["protocol"]["split_sizes"]
    assert sizes == {"train": 3 * 9, "val": 3 * 3, "test": 3 * 6}  # only red, green and blue images, in every split


def test_heldout_classes_are_the_unknowns_and_score_above_chance(half_run, capsys):
    assert main(["eval", str(half_run), "--unknown", "heldout", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    o = result["openset"]
    assert o["heldout_classes"] == ["3_grey", "4_dark", "5_light"] and o["unknown_dir"] == "heldout"
    assert o["unknown_images"] == 18 and o["known_images"] == result["n"] == 18  # the test images of each half
    assert result["acc"] > 0.9  # the model learnt its three colours
    for name in ("msp", "energy", "max_logit"):  # 1.0 when measured; chance is 0.5
        assert o["scores"][name]["auroc"] > 0.8, (name, o["scores"][name])


def test_heldout_unknowns_come_from_the_split_of_the_known_images(half_run, capsys):
    from fgvc.data import build_dataset
    from fgvc.openset import heldout_dataset

    run = api.Run(half_run)
    d = run.config.data
    for split in ("val", "test"):
        unknown = heldout_dataset(run.config, run.eval_transform, split)
        held_out = run.dataset(split).class_names  # the known classes; the others' files of the same split
        every = {s.path for s in build_dataset(d.name, d.root, split, None, d.val_fraction, run.config.train.seed).samples}
        assert unknown.samples and {s.path for s in unknown.samples} <= every, split
        assert not set(unknown.class_names) & set(held_out)
    assert main(["eval", str(half_run), "--unknown", "heldout", "--split", "val", "--json"]) == 0
    o = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["openset"]
    assert o["known_split"] == "val" and o["unknown_images"] == len(heldout_dataset(run.config, None, "val"))


def test_heldout_of_a_run_on_every_class_is_one_sentence(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--unknown", "heldout"]) == 2
    err = capsys.readouterr().err
    assert "every class" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
