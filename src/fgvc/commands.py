"""The handlers of the `fgvc` subcommands: each takes the namespace ``fgvc.cli`` parsed and returns an
exit code. Heavy imports (torch and what needs it) happen inside the handlers, so that `fgvc --help`
and a mistyped command answer at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from fgvc.errors import UserError
from fgvc.shipped import shipped_recipes


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    # `fgvc train key=value` (no file): argparse puts the first override in `config`
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def _check_out(out) -> None:
    """--out (or its default) naming a file, or under one: one sentence before any work (fgvc.runs)."""
    from fgvc.runs import check_out_dir

    check_out_dir(out, "--out")


def cmd_data(args) -> int:
    if args.data_command == "synth":
        from fgvc.data import synthetic

        synthetic.check_target(args.root, args.overwrite, "--root", "--overwrite")  # the CLI's own wording
        path = synthetic.generate(args.root, classes=args.classes, per_class=args.per_class, size=args.size,
                                  seed=args.seed, layout=args.layout, overwrite=args.overwrite,
                                  progress=not args.quiet)
        print(f"wrote synthbirds ({args.classes} classes, {args.per_class} images each, {args.layout} layout) to {path}")
        return 0
    if args.data_command == "prepare":
        from fgvc.data import download

        path = download.prepare(args.name, args.root, url=args.url, md5=args.md5)
        print(f"{args.name} is ready in {path}")
        return 0
    if args.data_command == "audit":
        return _data_audit(args)
    if args.data_command == "birds50":
        from fgvc.data import birds50

        path = birds50.build(args.cub, args.out, size=args.size, progress=not args.quiet)
        print(f"wrote birds50 ({len(birds50.SPECIES)} species, {args.size} px) to {path}; train on it with "
              f"data.name=cub200 data.root={path}")
        return 0
    from fgvc.data import info

    d = info.describe(args.name, args.root, check=args.check)
    print(json.dumps(d, indent=2, default=str) if args.json else info.format_info(d))
    return 1 if args.check and d.get("unreadable") else 0


def _data_audit(args) -> int:
    from fgvc.audit.run import run_audit

    s = run_audit(args.name, args.root, args.out, args.what, args.against, args.threshold, args.hashes, args.run,
                  args.model, args.weights, args.image_size, args.folds, args.top, args.seed,
                  progress=not args.quiet, detectors=args.detectors, similarity=args.similarity,
                  overwrite=args.overwrite)
    if "duplicates" in s:
        d = s["duplicates"]
        print(f"duplicates: {d['pairs']} pair(s) ({d['train_test_pairs']} train-test, {d['within_split_pairs']} "
              f"within one split, {d['against_pairs']} against other folders); {d['test_images_with_duplicate']} "
              f"of {s['test_images']} test images have a copy in train or another folder; "
              f"{d['cross_class_pairs']} pair(s) put one image under two classes ({d['criterion']})")
        if "accuracy" in d:
            a = d["accuracy"]
            print(f"test accuracy {a['test_acc']:.4f} on {a['test_images']} images, {a['test_acc_without_duplicates']:.4f} "
                  f"without the {a['duplicated_test_images']} duplicated ones")
    if "labels" in s:
        lab = s["labels"]
        print(f"labels: {lab['suspects']} of {lab['images']} training images flagged by cleanlab "
              f"(out-of-fold probe accuracy {lab['oof_acc']:.4f}, {lab['folds']} folds, {lab['features']})")
    print(s["out"])
    return 0


def _load_train_config(config: str | None, overrides: list[str]):
    from fgvc import config as config_mod

    path = None
    if config:
        path = Path(config) if Path(config).exists() or config.endswith((".yaml", ".yml")) else None
        path = path or config_mod.shipped_config(config)
    return config_mod.load(path, overrides)


def cmd_train(args) -> int:
    from fgvc import runs
    from fgvc.clip.finetune import after_training
    from fgvc.train import is_main_process, metrics_table, train

    if args.keys:
        print(_keys_text())
        return 0
    if not args.resume and not args.config and not args.overrides:
        # the defaults alone are a 100-epoch ResNet-50 run: never start that by accident
        raise UserError("fgvc train needs a recipe or key=value overrides, e.g. `fgvc train synthbirds_cpu "
                        "data.root=data/synthbirds`; shipped recipes: "
                        + ", ".join(name for name, _ in shipped_recipes())
                        + "; `fgvc train --help` explains them and `fgvc train --keys` lists every key")
    if args.resume:
        from fgvc import config as config_mod

        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        if config:
            raise UserError(f"--resume continues with the run's own config.yaml; pass only key=value overrides, "
                            f"not {config}")
        cfg = config_mod.load(runs.check_run_dir(args.resume) / "config.yaml", overrides)
        run_dir = train(cfg, run_dir=args.resume, resume=True, progress=not args.quiet,
                        after=after_training(cfg, not args.quiet))
    else:
        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        cfg = _load_train_config(config, overrides)
        run_dir = train(cfg, progress=not args.quiet, after=after_training(cfg, not args.quiet))
    if not is_main_process():  # train.devices > 1: the first process reports
        return 0
    print(metrics_table(runs.read_metrics(run_dir)))
    print(run_dir)
    return 0


def cmd_eval(args) -> int:
    from fgvc.evaluation import eval_run, summary

    # scored as training scored val/test: the same pipeline (its reduced JPEG decode included),
    # batches and precision (--precision run: the one the run trained in, where this device runs it); + calibration, TTA, open set
    result = eval_run(args.run_dir, args.split, tta=args.tta, unknown=args.unknown, progress=not args.json,
                      device=args.device, precision=args.precision, data_root=args.data_root)
    files = result.pop("files")
    if args.json:
        print(json.dumps(result))
        return 0
    print(summary(result, args.split))
    print(f"wrote {' and '.join(files.values())}")
    return 0


def cmd_predict(args) -> int:
    from fgvc.predict import predict_files

    results = predict_files(args.run_dir, args.images, topk=args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for p in r["top"]:
            print(f"  {p['prob']:.3f}  {p['class']}")
    return 0


def cmd_explain(args) -> int:
    from fgvc.explain.run import explain_run

    methods = [m.strip() for m in args.method.split(",")] if args.method else None
    result = explain_run(args.run_dir, images=args.images, methods=methods, split=args.split, limit=args.limit,
                         out_dir=args.out, save_maps=args.save_maps, device=args.device,
                         localization=not args.no_localization, precision=args.precision,
                         data_root=args.data_root)
    print(result["out_dir"])  # explain_run has printed the localisation table, if any
    return 0


def cmd_serve(args) -> int:
    from fgvc.serve import check_installed

    check_installed()  # the serve extra: one sentence with the pip command when it is missing
    from fgvc.serve import serve

    serve(args.run_dir, host=args.host, port=args.port)  # until Ctrl-C
    return 0


def cmd_attack(args) -> int:
    from fgvc.robust import parse_eps
    from fgvc.robust.run import attack_run

    result = attack_run(args.run_dir, args.attack, parse_eps(args.eps), split=args.split, limit=args.limit,
                        alpha=args.alpha, steps=args.steps, compare=args.compare, device=args.device,
                        precision=args.precision, data_root=args.data_root)
    print(result["table"])
    print("\n".join(result["files"]))
    return 0


def cmd_zeroshot(args) -> int:
    from fgvc.clip import run_zeroshot

    tag = Path(args.templates).stem if Path(args.templates).is_file() else args.templates
    out = args.out or f"runs/zeroshot-{args.data}-{args.model}-{args.pretrained}-{tag}".replace("/", "_").replace(":", "_")
    _check_out(out)
    metrics = run_zeroshot(args.model, args.pretrained, args.data, args.root, out, split=args.split,
                           templates=args.templates, descriptions=args.descriptions, batch_size=args.batch_size,
                           device=args.device, num_workers=args.num_workers, use_cache=not args.no_cache,
                           download=not args.offline)
    split = args.split
    print(f"{args.model} ({args.pretrained}), templates {args.templates}: "
          f"top-1 {metrics[f'{split}_acc']:.4f}  top-5 {metrics[f'{split}_top5']:.4f}  "
          f"mean per-class {metrics[f'{split}_mean_class_acc']:.4f}")
    print(out)
    return 0


def cmd_probe(args) -> int:
    from fgvc.train.probe import check_probe_out, new_probe_dir, run_probe

    config, overrides = _split_config_and_overrides(args.config, args.overrides)
    if not config and not overrides:
        raise UserError("fgvc probe needs a recipe or key=value overrides, e.g. `fgvc probe model.name=resnet50 "
                        "model.pretrained=true data.root=data`")
    cfg = _load_train_config(config, overrides)
    # like `fgvc train`: out=DIR is the parent of a new folder; --out names the folder itself; a finished
    # probe is never overwritten
    out = check_probe_out(args.out, "--out") if args.out else new_probe_dir(cfg)
    m = run_probe(cfg, out, progress=not args.quiet)
    print(f"linear probe on {m['feature_dim']}-d features of {cfg.model.name}: test top-1 {m['test_acc']:.4f} "
          f"(val {m['val_acc']:.4f}, weight decay {m['weight_decay']:g}, {m['seconds']:.0f} s)")
    print(out)
    return 0


def cmd_weights(args) -> int:
    if args.out:
        _check_out(args.out)
    if args.weights_command == "import":
        from fgvc.pretrained import import_tflite

        if not str(args.file).endswith(".tflite"):
            raise UserError(f"fgvc weights import reads TensorFlow Lite files (.tflite), got {args.file}; "
                            ".safetensors and .pth files need no import: pass them as model.weights=FILE")
        path = import_tflite(args.file, args.out, model_name=args.model, labels=args.labels)
        print(f"wrote {path} and {path.with_suffix('.json')}; train with model.name={args.model} model.weights={path}")
        return 0
    from fgvc.pretrained import run_label_match

    out = args.out or f"runs/labelmatch-{args.data}-{Path(args.file).stem}"
    m = run_label_match(args.file, args.labels, args.data, args.root, out, model_name=args.model, split=args.split,
                        image_size=args.image_size, progress=not args.quiet)
    print(f"{m['matched_classes']} of {m['dataset_classes']} classes matched a label; on their {m['images']} "
          f"{args.split} images: top-1 {m['acc_all_labels']:.4f} among all {Path(args.labels).name} labels, "
          f"{m['acc_matched_labels']:.4f} among the matched ones")
    print(out)
    return 0


def cmd_gan(args) -> int:
    from fgvc.gan import load_gan_config, sample_dataset, train_gan

    if args.gan_command == "sample":
        out = sample_dataset(args.run_dir, args.per_class, args.out, seed=args.seed, ema=not args.raw,
                             device=args.device)
        print(f"wrote {args.per_class} generated images per class to {out} (folder layout)")
        return 0
    if args.resume:
        from fgvc.gan.config import check_resume_overrides

        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        if config:  # argparse gives the first key=value to `config`: without this it was silently dropped
            raise UserError(f"--resume continues with the run's own config.yaml; pass only key=value overrides, "
                            f"not {config}")
        run_config = Path(args.resume) / "config.yaml"
        cfg = load_gan_config(run_config, overrides)
        check_resume_overrides(load_gan_config(run_config), cfg)  # config.yaml never claims what did not run
        run_dir = train_gan(cfg, progress=not args.quiet, resume=args.resume)
    else:
        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        run_dir = train_gan(load_gan_config(config, overrides), progress=not args.quiet)
    print(run_dir)
    return 0


def cmd_clip(args) -> int:
    from fgvc.clip import run_linear_probe
    from fgvc.clip.finetune import run_finetune

    out = args.out or f"runs/clip-{args.clip_command}-{args.data}-{args.model}-{args.pretrained}".replace(
        "/", "_").replace(":", "_")
    _check_out(out)
    common = dict(templates=args.templates, batch_size=args.batch_size, device=args.device,
                  num_workers=args.num_workers, download=not args.offline)
    if args.clip_command == "probe":
        metrics = run_linear_probe(args.model, args.pretrained, args.data, args.root, out, **common)
    else:  # a classifier-loop run: fgvc eval / attack / explain / serve / export read it
        metrics = run_finetune(args.model, args.pretrained, args.data, args.root, out, epochs=args.epochs,
                               lr=args.lr, loggers=args.loggers, resume=args.resume, overrides=args.overrides,
                               progress=not args.quiet, **common)
    print(f"{args.clip_command}: test top-1 {metrics['test_acc']:.4f}")
    print(out)
    return 0


def cmd_study(args) -> int:
    from fgvc.experiments.study import run_study

    _check_out(args.out)
    only = [r.strip() for r in args.only.split(",")] if args.only else None
    options = None
    if args.launcher != "sequential":
        from fgvc.experiments.launch import LaunchOptions

        options = LaunchOptions(partition=args.partition, gpus_per_node=args.gpus_per_node,
                                cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time_min,
                                array_parallelism=args.array_parallelism, account=args.account, qos=args.qos,
                                constraint=args.constraint, setup=args.setup)
    if args.data:  # Table 9's rows choose their own dataset: --data would run every one on a single one
        from fgvc.experiments.study import read_study

        name, study = read_study(args.study)
        own = [r for r, spec in study["rows"].items() if "data.name" in spec.get("overrides", {})]
        if own:
            raise UserError(f"study {name} chooses the dataset per row ({', '.join(own[:3])}); --data {args.data} "
                            "would run every row on one: drop --data, or pass data.name= to mean exactly that")
    overrides = ([f"data.name={args.data}"] if args.data else []) + list(args.overrides)  # key=value wins
    folder = run_study(args.study, overrides, only=only, out=args.out, progress=not args.quiet,
                       launcher=args.launcher, launch_options=options, detach=args.detach, seeds=args.seeds)
    if args.detach and args.launcher != "sequential":
        print(folder)
        return 0
    print((folder / "table.md").read_text())
    print(folder)
    return 0


def cmd_report(args) -> int:
    from fgvc.report import write_report

    path = write_report(args.runs_dir, args.out)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def cmd_export(args) -> int:
    from fgvc.export import export_model, sidecar_path

    path = export_model(args.run_dir, args.fmt, out=args.out, batch=args.batch, tolerance=args.tolerance)
    if args.fmt == "hf":
        check = json.loads((path / "config.json").read_text(encoding="utf-8"))["fgvc"]["verification"]
        print(f"hf: timm loads the folder; max abs logit difference to fgvc {check['max_abs_diff']:.2g} "
              f"(tolerance {check['tolerance']:g})")
        print(f"wrote {path} (config.json, model.safetensors, README.md)")
        return 0
    info = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    check = info["verification"]
    print(f"{info['format']}: max abs logit difference to PyTorch {check['max_abs_diff']:.2g} at batch "
          f"{' and '.join(map(str, check['batches']))} (tolerance {check['tolerance']:g})")
    print(f"wrote {path} and {sidecar_path(path)}")
    return 0


def cmd_demo(args) -> int:
    from fgvc.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs)
    return 0


HANDLERS = {
    "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "explain": cmd_explain,
    "attack": cmd_attack, "zeroshot": cmd_zeroshot, "clip": cmd_clip, "weights": cmd_weights, "probe": cmd_probe,
    "gan": cmd_gan, "study": cmd_study,
    "report": cmd_report, "demo": cmd_demo, "serve": cmd_serve,
    "export": cmd_export,
}


def _keys_text() -> str:
    from fgvc import config as config_mod

    defaults = config_mod.Config()
    keys = config_mod.all_keys()
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {config_mod.get(defaults, k)!r}" for k in keys)


