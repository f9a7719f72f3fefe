"""fgvc probe (a linear probe on any backbone) and fgvc weights zeroshot (label matching)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fgvc import config as config_mod
from fgvc.cli import main
from fgvc.models.factory import create_model
from fgvc.models.labelmatch import label_match_accuracy, label_names, match_classes, normalize_name
from fgvc.train.probe import head_inputs, run_probe


def test_probe_features_are_what_the_head_sees():
    torch.manual_seed(0)
    model = create_model("resnet18", 3).eval()
    x = torch.rand(5, 3, 32, 32)
    feats, labels = head_inputs(model, DataLoader(TensorDataset(x, torch.arange(5) % 3), batch_size=2))
    net = model.net
    with torch.no_grad():
        h = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(model.normalize(x)))))))))
    assert torch.allclose(feats, h.mean((2, 3)), atol=1e-5) and labels.tolist() == [0, 1, 2, 0, 1]


def test_probe_run_writes_its_metrics_and_learns(tmp_path, tiny_synthbirds_root):
    cfg = config_mod.load(None, ["model.name=resnet18", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                                 "data.image_size=32", "train.accelerator=cpu"])
    m = run_probe(cfg, tmp_path / "probe", progress=False)
    saved = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert saved == m and m["task"] == "linear_probe" and m["feature_dim"] == 512
    assert m["pretrained"] == {"source": "scratch"}
    assert m["train_acc"] > 1 / 4  # random features of 4 classes still separate the training images
    # the protocol block a study table and the report compare across rows, true for this run
    p = m["protocol"]
    assert p["task"] == "linear_probe" and p["dataset"] == "synthbirds" and p["pretrained"] == m["pretrained"]
    assert p["split_sizes"] == {"train": m["train_images"], "val": m["val_images"], "test": m["test_images"]}
    assert p["val_draw"]["source"] == "carved from train" and p["seed"] == cfg.train.seed
    assert p["input_size"] == 32 and p["crop_ratio"] == pytest.approx(0.875, abs=0.02)


def test_label_match_records_its_protocol(tmp_path, tiny_synthbirds_root):
    from safetensors.torch import save_file

    from fgvc.data import build_dataset
    from fgvc.models.factory import create_model
    from fgvc.pretrained import run_label_match

    names = build_dataset("synthbirds", tiny_synthbirds_root, "test").class_names
    (tmp_path / "labels.txt").write_text("\n".join(names[::-1]) + "\n")
    save_file(create_model("test_resnet", len(names)).net.state_dict(), tmp_path / "w.safetensors")
    m = run_label_match(tmp_path / "w.safetensors", tmp_path / "labels.txt", "synthbirds", tiny_synthbirds_root,
                        tmp_path / "out", model_name="test_resnet", image_size=32, progress=False)
    p = m["protocol"]
    assert p["task"] == "label_match" and p["split_sizes"] == {"test": len(build_dataset(
        "synthbirds", tiny_synthbirds_root, "test"))}
    assert p["pretrained"]["sha256"] == m["pretrained"]["sha256"] and p["input_size"] == 32


def test_probe_without_arguments_is_one_sentence(capsys):
    assert main(["probe"]) == 2
    assert "needs a recipe" in capsys.readouterr().err


def test_names_match_across_conventions():
    assert normalize_name("001.Black_footed_Albatross") == "black footed albatross"
    assert label_names("Phoebastria nigripes (Black-footed Albatross)")[0] == "black footed albatross"
    assert label_names("albatross, mollymawk") == ["albatross", "mollymawk"]
    classes = ["001.Black_footed_Albatross", "002.Nonexistent_Bird", "003.Gray_Catbird"]
    labels = ["background", "Dumetella carolinensis (Gray Catbird)", "Phoebastria nigripes (Black-footed Albatross)"]
    assert match_classes(classes, labels) == {0: 2, 2: 1}


def test_label_match_accuracy_counts_only_matched_classes_two_ways():
    mapping = {0: 2, 2: 1}  # dataset class -> model output; class 1 has no label

    class Fixed(torch.nn.Module):
        def forward(self, x):  # output 2 wins for images whose first pixel > 0.5, else output 3 (unmatched)
            hi = (x[:, 0, 0, 0] > 0.5).float()
            return torch.stack([0 * hi, 0.5 + 0 * hi, 2 * hi, 1 - hi + 0.6], dim=1)

    x = torch.tensor([0.9, 0.1, 0.9, 0.2])[:, None, None, None].expand(4, 3, 2, 2).contiguous()
    y = torch.tensor([0, 0, 1, 2])  # the class-1 image is left out
    m = label_match_accuracy(Fixed(), DataLoader(TensorDataset(x, y), batch_size=2), mapping)
    # all labels: image 0 -> output 2 (right), image 1 -> output 3 (wrong), image 3 -> output 3 (wrong)
    # matched labels only (outputs 1 and 2): image 0 -> 2 (right), image 1 -> 1 (wrong), image 3 -> 1 (right)
    assert m["images"] == 3
    assert m["acc_all_labels"] == pytest.approx(1 / 3) and m["acc_matched_labels"] == pytest.approx(2 / 3)
