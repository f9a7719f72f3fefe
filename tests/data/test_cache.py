"""Decoded-image cache: equal batches with and without it, invalidation, and builds cut short."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

import fgvc.data.base
from fgvc.data import build_dataset, cache
from fgvc.data.seeding import EpochSampler, PerSampleSeeded
from fgvc.data.transforms import decode_min_side, eval_transform, train_transform
from fgvc.errors import UserError

SIZE = 32


def _split(root, split="train", transform=None, geometric=False):
    ds = build_dataset("synthbirds", root, split, transform or eval_transform(SIZE), 0.1, 0)
    ds.decode_min_side = decode_min_side(SIZE, geometric)  # as the training loop sets it
    return ds


def _batches(ds, epochs=(0, 1), workers=0):
    """Every batch of a seeded, shuffled loader per epoch, as training draws them."""
    sampler = EpochSampler(RandomSampler(range(len(ds)), generator=torch.Generator().manual_seed(3)))
    loader = DataLoader(PerSampleSeeded(ds, seed=7), batch_size=8, sampler=sampler, num_workers=workers)
    out = []
    for epoch in epochs:
        sampler.use_epoch(epoch)
        sampler.sampler.generator.manual_seed(epoch)
        out += [x for x, _ in loader]
    return torch.cat(out)


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image file although it is cached")
    monkeypatch.setattr(fgvc.data.base, "read_rgb", refuse)


def test_cached_eval_batches_equal_the_uncached_ones_and_decode_nothing(cub_root, tmp_path, monkeypatch):
    ds = _split(cub_root, "test")
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    cached = cache.cached(ds, tmp_path, progress=False)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".lock", ".u8"]
    assert cached.cache.nbytes == len(ds) * SIZE * SIZE * 3  # the centre crop is what is stored
    _no_decoding(monkeypatch)
    got = torch.stack([cached[i][0] for i in range(len(cached))])
    assert torch.equal(got, expected)
    assert [cached[i][1] for i in range(len(cached))] == ds.targets


@pytest.mark.parametrize("geometric, random_crop", [(False, False), (True, False), (False, True)])
def test_train_batches_under_a_seed_are_identical_with_and_without_the_cache(cub_root, tmp_path, monkeypatch,
                                                                              geometric, random_crop):
    transform = train_transform(SIZE, geometric=geometric, cutout=2, random_crop=random_crop)
    ds = _split(cub_root, transform=transform, geometric=geometric)
    expected = _batches(ds)
    cached = cache.cached(ds, tmp_path, progress=False)
    _no_decoding(monkeypatch)
    got = _batches(cached)
    assert torch.equal(got, expected)
    assert not torch.equal(got[: len(ds)], got[len(ds):])  # the epochs do differ: augmentation ran on the cache


def test_a_pipeline_of_fixed_steps_only_is_cached_whole(cub_root, tmp_path, monkeypatch):
    from fgvc.train.device_aug import host_side, host_transform  # data.augment_on=device's host part

    ds = _split(cub_root, transform=host_transform(SIZE, geometric=True), geometric=True)
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    cached = cache.cached(ds, tmp_path, progress=False)
    assert cached.cache.nbytes == len(ds) * host_side(SIZE, True) ** 2 * 3
    _no_decoding(monkeypatch)
    got = torch.stack([cached[i][0] for i in range(len(cached))])
    assert got.dtype == torch.uint8 and torch.equal(got, expected)


def test_workers_open_the_memory_map_themselves(cub_root, tmp_path):
    ds = _split(cub_root, transform=train_transform(SIZE, geometric=True), geometric=True)
    cached = cache.cached(ds, tmp_path, progress=False)
    assert cached.cache._pixels is not None  # mapped in this process, and left out when pickled (spawn)
    assert (pickle.loads(pickle.dumps(cached)).cache[3] == cached.cache[3]).all()
    assert pickle.loads(pickle.dumps(cached)).cache._pixels is None
    assert torch.equal(_batches(cached, workers=2), _batches(ds))


def test_a_changed_image_makes_a_new_cache_and_the_old_one_goes(cub_copy, tmp_path):
    tmp_path = tmp_path / "cache"  # cub_copy is in tmp_path too
    ds = _split(cub_copy, "test")
    first = cache.cached(ds, tmp_path, progress=False)
    path = ds.samples[2].path
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=95)
    os.utime(path, ns=(1, 1))  # a different mtime even where the clock is coarse
    again = cache.cached(_split(cub_copy, "test"), tmp_path, progress=False)
    assert again.cache.data_path != first.cache.data_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        again.cache.data_path.with_suffix(s).name for s in (".json", ".lock", ".u8"))
    assert torch.equal(again[2][0], ds[2][0]) and not torch.equal(again[2][0], first[2][0])


def test_a_build_cut_short_leaves_nothing_that_is_trusted(cub_root, tmp_path, monkeypatch):
    ds = _split(cub_root, "test")
    calls = []
    real = cache.read_rgb

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-build
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "read_rgb", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        cache.cached(ds, tmp_path, progress=False)
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # no pixels, no index, no temp file
    monkeypatch.setattr(cache, "read_rgb", real)
    built = cache.cached(ds, tmp_path, progress=False)
    key = cache.cache_key(ds, cache.split_pipeline(ds.transform)[0])
    index = tmp_path / f"{key.stem}.json"

    # killed between the pixels' rename and the index's: pixels without an index are not trusted
    index.unlink()
    assert cache.open_cache(tmp_path, key, len(ds)) is None
    # a truncated pixel file under an index is not trusted either, and is rebuilt
    cache.cached(ds, tmp_path, progress=False)
    with open(built.cache.data_path, "r+b") as f:
        f.truncate(built.cache.nbytes - 1)
    assert cache.open_cache(tmp_path, key, len(ds)) is None
    rebuilt = cache.cached(ds, tmp_path, progress=False)
    assert torch.equal(rebuilt[len(ds) - 1][0], ds[len(ds) - 1][0])


def test_auto_caches_within_the_budget_and_says_what_it_leaves_out(cub_root, tmp_path):
    train, test = _split(cub_root, "train"), _split(cub_root, "test")
    said = []
    out = cache.cache_datasets([train, test], "auto", 0.0, tmp_path, progress=False, log=said.append)
    assert out == [train, test] and not list(tmp_path.glob("*.u8"))
    assert "data.cache_budget_gb=0" in said[0] and "train images" in said[0]
    one_split = (len(train) * SIZE * SIZE * 3 + 1) / 2**30  # room for train, not for test as well
    said.clear()
    out = cache.cache_datasets([train, test], "auto", one_split, tmp_path, progress=False, log=said.append)
    assert isinstance(out[0], cache.CachedDataset) and out[1] is test and "test images" in said[0]
    out = cache.cache_datasets([train, test], "on", 0.0, tmp_path, progress=False)
    assert all(isinstance(d, cache.CachedDataset) for d in out)
    assert cache.cache_datasets([train], "off", 100, tmp_path) == [train]


def test_a_pipeline_that_cannot_be_cached_is_refused_with_one_sentence(cub_root, tmp_path):
    ds = _split(cub_root, "test", transform=lambda im: im)
    with pytest.raises(UserError, match="data.cache=off"):
        cache.cache_datasets([ds], "on", 4, tmp_path, progress=False)
    assert cache.cache_datasets([ds], "auto", 4, tmp_path, progress=False) == [ds]


def test_the_default_folder_is_the_user_cache_not_the_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_cache_dir() == Path(tmp_path) / "fgvc" / "images"


def test_data_cache_on_trains_and_scores_from_the_cache_files(tiny_synthbirds_root, tmp_path, monkeypatch):
    from fgvc import config
    from fgvc.train import train

    _no_decoding(monkeypatch)  # the loader's own decoding; the cache's build decodes through cache.read_rgb
    folder = tmp_path / "cache"
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", "train.batch_size=8",
                             "train.precision=32-true", "train.epochs=1", "aug.geometric=true",
                             "data.cache=on", f"data.cache_dir={folder}", f"out={tmp_path / 'runs'}"])
    run_dir = train(cfg, progress=False)
    assert (run_dir / "metrics.json").is_file()
    assert sorted(p.name.split("-")[1] for p in folder.glob("*.u8")) == ["test", "train", "val"]
    assert {p.name.split("-")[0] for p in folder.glob("*.u8")} == {"synthbirds"}  # the registry name, not cub200


def test_data_cache_budget_gb_reaches_the_loaders_of_a_run(tiny_synthbirds_root, tmp_path, capsys):
    from fgvc import config
    from fgvc.train import train

    folder = tmp_path / "cache"
    base = ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0", "data.name=synthbirds",
            f"data.root={tiny_synthbirds_root}", "train.batch_size=8", "train.precision=32-true", "train.epochs=1",
            "data.cache=auto", f"data.cache_dir={folder}", f"out={tmp_path / 'runs'}"]
    train(config.load(None, base + ["data.cache_budget_gb=0"]), progress=False)
    assert not list(folder.glob("*.u8")) and "data.cache_budget_gb=0" in capsys.readouterr().out
    train(config.load(None, base + ["data.cache_budget_gb=1"]), progress=False)
    assert sorted(p.name.split("-")[1] for p in folder.glob("*.u8")) == ["test", "train", "val"]


def test_an_unreadable_image_stops_the_build_with_its_sentence_and_leaves_nothing(cub_copy, tmp_path):
    from fgvc.errors import UnreadableImage, message

    folder = tmp_path / "cache"
    ds = _split(cub_copy, "test")
    ds.samples[3].path.write_bytes(b"not a jpeg")
    with pytest.raises(UnreadableImage) as caught:
        cache.cached(ds, folder, workers=1, progress=False)  # raised in a loader worker
    assert message(caught.value).startswith(f"image {ds.samples[3].path} cannot be decoded")
    assert [p.suffix for p in folder.iterdir()] == [".lock"]


def test_a_cache_folder_with_no_room_says_so_instead_of_a_size(cub_root, tmp_path, monkeypatch):
    # a folder on a pseudo file system (or a full disk) reports 0 bytes free: the sentence says why
    monkeypatch.setattr(cache, "_free_bytes", lambda folder: 0)
    with pytest.raises(UserError, match="no room for files") as e:
        cache.cache_datasets([_split(cub_root, "test")], "on", 4, tmp_path / "nowhere", progress=False)
    assert "MiB" in str(e.value) and "0.00 GiB" not in str(e.value)
