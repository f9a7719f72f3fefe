"""fgvc data audit, bad input: exit 2 with one sentence, nothing written."""

import pytest
from audit_helpers import fake_run, folder_dataset

from fgvc.cli import main


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit_errors")
    root = folder_dataset(base / "data", classes=2, train=3, test=1)
    return root, fake_run(base / "unfinished", num_classes=2, checkpoint=False)


CASES = {
    "unknown dataset": (["nosuch", "--root", "{root}"], "unknown dataset 'nosuch'"),
    "missing root": (["folder", "--root", "{root}/missing"], "does not exist"),
    "missing against folder": (["folder", "--root", "{root}", "--against", "{root}/nothere"], "--against folder"),
    "against folder without images": (["folder", "--root", "{root}", "--against", "{root}/train/c0/.."
                                       "/../../empty"], "--against folder"),
    "not a run": (["folder", "--root", "{root}", "--run", "{root}"], "not an fgvc run directory"),
    "run without checkpoint": (["folder", "--root", "{root}", "--run", "{run}"], "no checkpoints/best.safetensors"),
    "one fold": (["folder", "--root", "{root}", "--model", "test_resnet", "--folds", "1"], "--folds 1 is too few"),
    "class smaller than folds": (["folder", "--root", "{root}", "--model", "test_resnet", "--folds", "4"],
                                 "class 'c0' has 3 training image(s), fewer than --folds 4"),
    "labels without features": (["folder", "--root", "{root}", "--what", "labels", "--folds", "2"],
                                "needs features"),
    "unknown audit": (["folder", "--root", "{root}", "--what", "leaks"], "unknown audit 'leaks'"),
    "unknown hash": (["folder", "--root", "{root}", "--hashes", "md5"], "unknown hash 'md5'"),
    "threshold out of range": (["folder", "--root", "{root}", "--threshold", "500"], "--threshold 500"),
    "unknown detector": (["folder", "--root", "{root}", "--detectors", "sift"], "unknown detector 'sift'"),
    "embedding without a backbone": (["folder", "--root", "{root}", "--detectors", "hash,embedding"],
                                     "the embedding detector needs a pretrained backbone"),
    "embedding with only a run": (["folder", "--root", "{root}", "--run", "{run}", "--detectors", "embedding"],
                                  "the embedding detector needs a pretrained backbone"),
    "similarity out of range": (["folder", "--root", "{root}", "--similarity", "1.5"], "--similarity 1.5"),
    "missing weights file": (["folder", "--root", "{root}", "--what", "duplicates", "--model", "test_resnet",
                              "--weights", "{root}/nothere.safetensors"], "weights file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_sentence(case, small, tmp_path, capsys):
    root, run = small
    (root.parent / "empty").mkdir(exist_ok=True)
    args, expected = CASES[case]
    out = tmp_path / "out"
    argv = ["data", "audit", *[a.format(root=root, run=run) for a in args], "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fgvc: ") and expected in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["data", "audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from fgvc.audit.embeddings import DEFAULT_SIMILARITY

    for shown in ("(default: 20)", "(default: phash,dhash,whash)", "(default: 5)", "(default: 224)",
                  f"(default: {DEFAULT_SIMILARITY})", "hash, plus embedding when --model is given",
                  "default: audit/<name>", "plus labels when --run or --model is given"):
        assert shown in text, shown
