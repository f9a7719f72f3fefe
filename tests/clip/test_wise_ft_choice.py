"""WiSE-FT's alpha is chosen on the val split, never on test (Wortsman et al. 2022)."""

import shutil

import pytest

from fgvc import runs
from fgvc.clip.finetune import choose_alpha, score_wise_ft

# val prefers alpha 0.25, test would prefer 0.75
VAL = {0.0: 0.1, 0.25: 0.9, 0.5: 0.2, 0.75: 0.3, 1.0: 0.4}
TEST = {0.0: 0.5, 0.25: 0.2, 0.5: 0.3, 0.75: 0.95, 1.0: 0.1}


def _curve(val=VAL, test=TEST):
    return [{"alpha": a, "val_acc": val[a], "test_acc": test[a]} for a in val]


def test_the_alpha_best_on_val_is_chosen_not_the_one_best_on_test():
    chosen = choose_alpha(_curve())
    assert chosen["alpha"] == 0.25 and chosen["test_acc"] == 0.2


def test_a_tie_on_val_goes_to_the_larger_alpha():
    assert choose_alpha(_curve({**VAL, 0.75: 0.9}))["alpha"] == 0.75


def test_score_wise_ft_reports_the_val_choice_and_its_test_accuracy(tiny_run, tmp_path, monkeypatch):
    """Through score_wise_ft: each alpha's val and test scores are scripted, the choice is read back."""
    from fgvc.evaluation import Scorer

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    alphas = iter(a for a in VAL for _ in range(2))  # score_wise_ft scores val, then test, per alpha

    def scripted(self, dataset, net=None, desc="eval"):
        alpha, split = next(alphas), dataset.split
        assert split in desc and split in ("val", "test")
        acc = (VAL if split == "val" else TEST)[alpha]
        return {"acc": acc, "top5": acc}

    monkeypatch.setattr(Scorer, "__call__", scripted)
    metrics = score_wise_ft(run_dir, progress=False, device="cpu")
    assert [r["alpha"] for r in metrics["wise_ft"]] == list(VAL)
    assert metrics["wise_ft_alpha"] == 0.25
    assert metrics["wise_ft_test_acc"] == pytest.approx(0.2)
    assert runs.read_metrics(run_dir)["wise_ft_alpha"] == 0.25
