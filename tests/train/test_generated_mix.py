"""Generated images mixed into training."""

import json

import pytest
from PIL import Image

from fgvc import config
from fgvc.data import build_dataset
from fgvc.data.generated import mix_generated
from fgvc.errors import UserError
from fgvc.train import train


@pytest.fixture()
def generated_root(tiny_synthbirds_root, tmp_path):
    names = build_dataset("synthbirds", tiny_synthbirds_root, "train").class_names
    root = tmp_path / "generated"
    for i, name in enumerate(names):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for k in range(PER_CLASS):
            Image.new("RGB", (32, 32), (60 * i, 255 - 60 * i, 12 * k)).save(folder / f"g{k}.png")
    return root


PER_CLASS = 20  # more generated images than real ones: a ratio of 1.0 and of 0.5 take different counts


def test_generated_ratio_sets_how_many_generated_images_train(tiny_synthbirds_root, generated_root, tmp_path):
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                             "data.train_source=real+generated", f"data.generated_root={generated_root}",
                             "data.generated_ratio=0.5"])
    real = len(build_dataset("synthbirds", tiny_synthbirds_root, "train", None, cfg.data.val_fraction,
                             cfg.train.seed))
    assert 4 * PER_CLASS > real  # ratio 1.0 would take `real` generated images, 0.5 half as many
    metrics = json.loads((train(cfg, progress=False) / "metrics.json").read_text())
    assert metrics["train_images"] == real + round(0.5 * real)


def test_sources_give_real_real_plus_generated_and_generated_only(tiny_synthbirds_root, generated_root):
    real = build_dataset("synthbirds", tiny_synthbirds_root, "train")
    assert mix_generated(real, generated_root, "real") is real
    mixed = mix_generated(real, generated_root, "real+generated", ratio=0.5)
    assert len(mixed) == len(real) + round(0.5 * len(real))
    only = mix_generated(real, generated_root, "generated")
    assert len(only) == PER_CLASS * len(real.class_names)
    # labels follow the class folder names
    for sample in only.samples:
        assert sample.path.parent.name == real.class_names[sample.label]


def test_a_generated_class_unknown_to_the_real_dataset_is_refused(tiny_synthbirds_root, generated_root):
    (generated_root / "train" / "999.Unicorn").mkdir()
    real = build_dataset("synthbirds", tiny_synthbirds_root, "train")
    with pytest.raises(UserError, match="999.Unicorn"):
        mix_generated(real, generated_root, "generated")


def test_training_on_generated_only_tests_on_the_real_split(tiny_synthbirds_root, generated_root, tmp_path):
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                             "data.train_source=generated", f"data.generated_root={generated_root}"])
    metrics = json.loads((train(cfg, progress=False) / "metrics.json").read_text())
    assert metrics["train_images"] == PER_CLASS * len(build_dataset("synthbirds", tiny_synthbirds_root, "train").class_names)
    real_test = build_dataset("synthbirds", tiny_synthbirds_root, "test")
    assert metrics["test_images"] == len(real_test)


def test_a_link_from_one_generated_class_folder_into_another_is_refused(tiny_synthbirds_root, generated_root):
    folders = sorted((generated_root / "train").iterdir())
    (folders[0] / "more").symlink_to(folders[1], target_is_directory=True)  # class 1's images again, labelled 0
    real = build_dataset("synthbirds", tiny_synthbirds_root, "train")
    with pytest.raises(UserError, match="symbolic link"):
        mix_generated(real, generated_root, "generated")
