"""Shared fixtures: generated synthbirds datasets, made once per session."""

import pytest


@pytest.fixture(scope="session")
def synthbirds_root(tmp_path_factory):
    """8 classes x 80 images at 64 px, CUB layout (half train, half test): the demo's dataset."""
    from fgvc.data import synthetic

    root = tmp_path_factory.mktemp("synthbirds")
    synthetic.generate(root, classes=8, per_class=80, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_synthbirds_root(tmp_path_factory):
    """4 classes x 16 images at 32 px: for runs that only need to work, not to learn."""
    from fgvc.data import synthetic

    root = tmp_path_factory.mktemp("tinybirds")
    synthetic.generate(root, classes=4, per_class=16, size=32, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_synthbirds_root, tmp_path_factory):
    """One finished 1-epoch resnet18 run on tiny synthbirds, shared by tests that only read a run."""
    from fgvc import config
    from fgvc.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = config.load(None, ["model.name=resnet18", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                             f"out={out}"])
    return train(cfg, progress=False)
