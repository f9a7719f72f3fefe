"""Eps sweeps: one gradient reused for every eps, accuracy per eps over a loader, eps parsing."""

import pytest
import torch
from robust_toys import accuracy
from test_robust_attacks import CountForwards
from torch.utils.data import DataLoader, TensorDataset

import fgvc.robust as robust
from fgvc.errors import UserError
from fgvc.robust.sweep import markdown_table


def test_sweep_gives_the_same_images_as_separate_fgsm_calls(trained_cnn, blob_test_set):
    x, y = blob_test_set[0][:64], blob_test_set[1][:64]
    images = robust.fgsm_sweep(trained_cnn, x, y, robust.SEED_EPS)
    assert list(images) == list(robust.SEED_EPS)
    for eps, x_adv in images.items():
        assert torch.equal(x_adv, robust.fgsm(trained_cnn, x, y, eps))


def test_sweep_runs_the_model_once_for_all_eps(random_cnn, blob_test_set):
    counted = CountForwards(random_cnn)
    robust.fgsm_sweep(counted, blob_test_set[0][:8], blob_test_set[1][:8], [0.01, 0.02, 0.05, 0.1])
    assert counted.calls == 1


def loader(blob_test_set, n=200, batch_size=48):
    return DataLoader(TensorDataset(blob_test_set[0][:n], blob_test_set[1][:n]), batch_size=batch_size)


def test_evaluate_fgsm_matches_direct_attacks_and_keeps_successful_examples(trained_cnn, blob_test_set):
    eps_list = [0.0, 0.05, 0.1]
    result = robust.evaluate_attack(trained_cnn, loader(blob_test_set), "fgsm", eps_list, progress=False)
    expected = {eps: 0 for eps in eps_list}
    for x, y in loader(blob_test_set):
        for eps in eps_list:
            expected[eps] += int((trained_cnn(robust.fgsm(trained_cnn, x, y, eps)).argmax(1) == y).sum())
    assert result["total"] == 200 and result["correct"] == expected
    assert result["accuracy"] == {eps: expected[eps] / 200 for eps in eps_list}
    assert result["accuracy"][0.1] < result["accuracy"][0.0] - 0.3
    assert result["examples"][0.0] == [] and len(result["examples"][0.1]) == 5
    for eps in (0.05, 0.1):
        for ex in result["examples"][eps]:
            assert ex["pred"] != ex["true"]
            assert accuracy(trained_cnn, ex["original"][None], torch.tensor([ex["true"]])) == 1.0
            assert trained_cnn(ex["adversarial"][None]).argmax().item() == ex["pred"]
            assert (ex["adversarial"] - ex["original"]).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", ["ifgsm", "pgd"])
def test_evaluate_iterative_attacks_beat_fgsm_and_stop_at_limit(trained_cnn, blob_test_set, name):
    steps = None if name == "ifgsm" else 5  # BIM's default: 29 steps of 1/255 at eps 0.1
    run = lambda attack: robust.evaluate_attack(  # noqa: E731
        trained_cnn, loader(blob_test_set), attack, "0,0.1", steps=steps, limit=100, progress=False)
    result, fgsm = run(name), run("fgsm")
    assert result["total"] == 100
    assert result["accuracy"][0.0] == fgsm["accuracy"][0.0]
    assert result["accuracy"][0.1] <= fgsm["accuracy"][0.1]
    assert result["settings"][0.1]["steps"] == (29 if name == "ifgsm" else 5)
    assert run(name)["correct"] == result["correct"]  # pgd's random start is seeded


def test_evaluate_attack_rejects_unknown_attack_and_empty_loader(trained_cnn, blob_test_set):
    with pytest.raises(UserError, match="unknown attack"):
        robust.evaluate_attack(trained_cnn, loader(blob_test_set), "cw", progress=False)
    with pytest.raises(UserError, match="no images"):
        robust.evaluate_attack(trained_cnn, [], "fgsm", progress=False)


def test_parse_eps_reads_numbers_fractions_and_list_names():
    assert robust.parse_eps("0, 0.05,8/255") == [0.0, 0.05, 8 / 255]
    assert robust.parse_eps("0.1,0.1,0.2") == [0.1, 0.2]
    assert robust.parse_eps("seed") == [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert robust.parse_eps("standard") == [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


@pytest.mark.parametrize("text", ["", "0,,0.1", "abc", "1/0", "1.5", "-0.1", "nan", "0.1;0.2", "300/255"])
def test_parse_eps_rejects_bad_lists(text):
    with pytest.raises(UserError):
        robust.parse_eps(text)


def test_markdown_table_shows_clean_cost_and_robust_gain():
    table = markdown_table({"standard": {0: 0.9, 0.1: 0.2}, "adversarial": {0: 0.85, 0.1: 0.6}})
    lines = table.splitlines()
    assert lines[0] == "| eps | standard | adversarial | adversarial - standard |"
    assert lines[2] == "| 0 | 0.900 | 0.850 | -0.050 |"
    assert lines[3] == "| 0.1 | 0.200 | 0.600 | +0.400 |"
