from fgvc.cli import main


def test_quiet_training_draws_no_cache_bars(tiny_synthbirds_root, tmp_path, capfd):
    common = ["model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
              "data.image_size=32", "train.epochs=1", "data.num_workers=0", "data.cache=on",
              f"data.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'runs'}"]
    assert main(["train", *common, "--quiet"]) == 0
    assert "caching" not in capfd.readouterr().err
    assert main(["train", *common, f"data.cache_dir={tmp_path / 'cache2'}"]) == 0  # without --quiet: the bars
    assert "caching synthbirds train" in capfd.readouterr().err
