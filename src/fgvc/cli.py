"""The one `fgvc` command. Only this module parses argv; library code takes explicit arguments.

Every subcommand handler takes the parsed namespace and returns an exit code. A UserError
anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

from fgvc.errors import UserError, message

# The demo's recipe: resnet18 from scratch on generated birds, small enough for a laptop CPU.
DEMO_DEFAULTS = {
    "classes": 8, "per_class": 80, "size": 64,
    "overrides": ["model.name=resnet18", "data.image_size=64", "train.epochs=12", "train.batch_size=32",
                  "train.lr=2e-3", "train.milestones=[9]", "train.patience=0", "data.num_workers=0"],
}


class AttackNames:
    """argparse choices: the names of ``fgvc.robust.attacks.ATTACKS``, read when first needed, so that
    building the parser (``fgvc --help``) does not import torch."""

    def _names(self) -> list[str]:
        from fgvc.robust.attacks import attack_names

        return attack_names()

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


PRECISION_HELP = ("run: the precision the run trained in (its metrics.json), where this device runs it natively; "
                  "or 32-true, bf16-mixed, 16-mixed (default: run)")
DEVICE_HELP = "auto (the first CUDA GPU, else the CPU), cpu, cuda or cuda:N (default: auto)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgvc", description="Fine-grained visual classification toolkit.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="get, generate and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = dsub.add_parser("prepare", help="download, verify and extract cub200 or dogs")
    prep.add_argument("name", choices=["cub200", "dogs"])
    prep.add_argument("--root", default="data", help="folder to extract into (default: data)")
    prep.add_argument("--url", help="mirror URL (for dogs: the base URL of the three tar files)")
    prep.add_argument("--md5", help="expected md5 of the archive (overrides the official one)")
    synth = dsub.add_parser("synth", help="generate the synthbirds fine-grained dataset")
    synth.add_argument("--root", default="data/synthbirds")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--per-class", type=int, default=40)
    synth.add_argument("--size", type=int, default=64, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--layout", choices=["cub", "dogs"], default="cub")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --root")
    info = dsub.add_parser("info", help="classes, split sizes and unreadable files of a dataset")
    info.add_argument("name")
    info.add_argument("--root", required=True)
    info.add_argument("--check", action="store_true", help="decode every image and list the bad ones")
    info.add_argument("--json", action="store_true")
    audit = dsub.add_parser(
        "audit", help="near-duplicates between train and test (and other folders), label-noise suspects",
        description="Audit a dataset: near-duplicate images between train and test and against --against "
                    "folders (perceptual hashes), and likely mislabelled training images (out-of-fold linear "
                    "probes on frozen features, ranked by cleanlab). By default the duplicates audit runs, and "
                    "the label audit too when --run or --model gives features. See docs/evaluation.md.")
    audit.add_argument("name", help="dataset name (cub200, dogs, folder, synthbirds, ...)")
    audit.add_argument("--root", required=True, help="dataset root")
    audit.add_argument("--against", nargs="+", action="extend", default=[], metavar="DIR",
                       help="folders of images to compare the dataset's train and test images with")
    audit.add_argument("--what", help="comma list of duplicates, labels (default: duplicates, plus labels "
                                      "when --run or --model is given)")
    audit.add_argument("--out", help="output folder (default: audit/<name>)")
    audit.add_argument("--threshold", type=int, default=20,
                       help="a pair is at most this many bits apart, summed over the hashes")
    audit.add_argument("--hashes", default="phash,dhash,whash", help="imagehash hashes, 64 bits each")
    audit.add_argument("--run", metavar="RUN_DIR", help="a finished run: test accuracy with and without the "
                                                       "duplicated test images, and its backbone's features")
    audit.add_argument("--model", help="backbone for the label audit's features, e.g. tf_mobilenetv2_100")
    audit.add_argument("--weights", help="local weights file for --model (.safetensors, .pth, .tflite)")
    audit.add_argument("--image-size", type=int, default=224, help="input size for --model, in px")
    audit.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold probabilities")
    audit.add_argument("--top", type=int, default=24, help="pairs / suspects shown in the galleries")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--quiet", action="store_true", help="no progress bars")

    train = sub.add_parser("train", help="train a classifier; prints the run directory",
                           description="Train a classifier from a recipe (a shipped name or a YAML file) and/or "
                                       "key=value overrides; prints the run directory.",
                           epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("config", nargs="?", help="YAML file or shipped recipe name (listed below)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config keys, e.g. train.lr=1e-3 (fgvc train --keys lists them all)")
    train.add_argument("--keys", action="store_true", help="print every config key with its default and exit")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run (key=value overrides change its config.yaml)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    ev = sub.add_parser("eval", help="evaluate a run's best checkpoint on a split")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--tta", choices=["flip", "five-crop", "ten-crop"],
                    help="also score with test-time augmentation, reported beside the plain numbers (default: none)")
    ev.add_argument("--unknown", metavar="DIR|heldout",
                    help="folder of images of classes the model never saw, or 'heldout': the test images of the "
                    "dataset's classes the run left out (data.classes); open-set AUROC, FPR at 95%% TPR")
    ev.add_argument("--device", default="auto", help=DEVICE_HELP)
    ev.add_argument("--precision", default="run", choices=["run", "32-true", "bf16-mixed", "16-mixed"],
                    help=PRECISION_HELP)
    ev.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="top-k classes for image files")
    pr.add_argument("run_dir")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--json", action="store_true")

    ex = sub.add_parser("explain", help="CAM / Grad-CAM / Grad-CAM++ overlays and localisation scores")
    ex.add_argument("run_dir")
    ex.add_argument("images", nargs="*", help="image files (default: --limit images of --split)")
    ex.add_argument("--method", help="comma list of cam, gradcam, gradcam++ (default: cam,gradcam)")
    ex.add_argument("--split", default="test", choices=["train", "val", "test"])
    ex.add_argument("--limit", type=int, default=8, help="images to draw from the split")
    ex.add_argument("--out", help="output folder (default: RUN_DIR/explain)")
    ex.add_argument("--save-maps", action="store_true", help="also write the raw maps (safetensors)")
    ex.add_argument("--no-localization", action="store_true", help="skip the box-overlap scores")
    ex.add_argument("--device", default="auto", help=DEVICE_HELP)
    ex.add_argument("--precision", default="run", choices=["run", "32-true", "bf16-mixed", "16-mixed"],
                    help=PRECISION_HELP)

    sv = sub.add_parser("serve", help="web demo of a run: top-5 classes, Grad-CAM and an FGSM slider "
                        "(pip install 'fgvc[serve]')")
    sv.add_argument("run_dir")
    sv.add_argument("--port", type=int, default=7860, help="port to listen on, 0 picks a free one (default: 7860)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 listens on every "
                    "interface, with no authentication (default: 127.0.0.1)")

    at = sub.add_parser("attack", help="accuracy under FGSM / I-FGSM / RS-FGSM / PGD across eps, with plot and gallery")
    at.add_argument("run_dir")
    at.add_argument("--attack", default="fgsm", choices=AttackNames(), metavar="ATTACK",
                    help="one of %(choices)s (default: %(default)s)")
    at.add_argument("--eps", default="seed",
                    help="comma list (0,0.05,8/255) or 'seed' (0..0.3) or 'standard' (1,2,4,8/255)")
    at.add_argument("--alpha", type=float, help="step size for ifgsm/pgd (default: the attack's own)")
    at.add_argument("--steps", type=int, help="steps for ifgsm/pgd")
    at.add_argument("--split", default="test", choices=["train", "val", "test"])
    at.add_argument("--limit", type=int, help="attack N images spread evenly over the split")
    at.add_argument("--compare", metavar="RUN_DIR", help="a second run (e.g. adversarially trained) on the same plot")
    at.add_argument("--device", default="auto", help=DEVICE_HELP)
    at.add_argument("--precision", default="run", choices=["run", "32-true", "bf16-mixed", "16-mixed"],
                    help=PRECISION_HELP + "; the images, their gradients and the steps stay fp32")

    def clip_args(p, batch_size):
        p.add_argument("--model", default="ViT-B-16", help="open_clip model name, e.g. ViT-B-32, ViT-L-14-336, hf-hub:...")
        p.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or a weights file")
        p.add_argument("--data", required=True, help="dataset name, e.g. cub200")
        p.add_argument("--root", required=True)
        p.add_argument("--templates", default="seed",
                       help="template set (seed, birds, dogs, ensemble, ...; join with +) or a text file")
        p.add_argument("--out", help="output folder (default: runs/<task>-<data>-<model>-...)")
        p.add_argument("--batch-size", type=int, default=batch_size)
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
        p.add_argument("--num-workers", type=int, default=2)
        p.add_argument("--offline", action="store_true", help="never try to download weights")

    zs = sub.add_parser("zeroshot", help="CLIP zero-shot classification of a dataset split")
    clip_args(zs, 64)
    zs.add_argument("--split", default="test", choices=["train", "val", "test"])
    zs.add_argument("--descriptions", help="JSON file: class name -> list of descriptions")
    zs.add_argument("--no-cache", action="store_true", help="re-encode images even if cached")

    clip = sub.add_parser("clip", help="CLIP linear probe and fine-tuning (with WiSE-FT)")
    csub = clip.add_subparsers(dest="clip_command", required=True, metavar="ACTION")
    probe = csub.add_parser("probe", help="logistic regression on frozen CLIP image features")
    clip_args(probe, 64)
    ft = csub.add_parser("finetune", help="fine-tune the image tower, head initialised from the text weights")
    clip_args(ft, 32)
    ft.add_argument("--epochs", type=int, default=3)
    ft.add_argument("--lr", type=float, default=1e-5)
    ft.add_argument("--loggers", default="", metavar="NAMES",
                    help="experiment logs under OUT/logs/: csv,tensorboard,mlflow,wandb (default: none)")

    probe = sub.add_parser("probe", help="linear probe (logistic regression) on a frozen backbone's features",
                           description="Fit an L2-regularised logistic regression on the frozen features of the "
                                       "model a recipe and key=value overrides describe (model.weights, "
                                       "model.pretrained), weight decay chosen on val; prints test top-1.")
    probe.add_argument("config", nargs="?", help="YAML file or shipped recipe name")
    probe.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, e.g. model.weights=FILE")
    probe.add_argument("--out", help="output folder (default: runs/probe-<data>-<model>)")
    probe.add_argument("--quiet", action="store_true", help="no progress bars")

    weights = sub.add_parser("weights", help="pretrained weights from local files: import TensorFlow Lite, "
                             "label-matching zero-shot")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    wimp = wsub.add_parser("import", help="a .tflite file -> .safetensors + .json (then model.weights=FILE)")
    wimp.add_argument("file", help="TensorFlow Lite file (MobileNetV2 family)")
    wimp.add_argument("--out", required=True, help="folder for <name>.safetensors and <name>.json")
    wimp.add_argument("--model", default="tf_mobilenetv2_100", help="fgvc model name (default: tf_mobilenetv2_100)")
    wimp.add_argument("--labels", help="text file of the model's labels, one per line, kept in the .json")
    wzs = wsub.add_parser("zeroshot", help="score a classifier's own head on the classes whose name is one of "
                          "its labels (no training)")
    wzs.add_argument("file", help="weights file with its head (.tflite, or .safetensors / .pth with --model)")
    wzs.add_argument("--labels", required=True, help="text file of the model's labels, one per line")
    wzs.add_argument("--data", required=True, help="dataset name (cub200, dogs, folder, ...)")
    wzs.add_argument("--root", required=True, help="dataset folder")
    wzs.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default: test)")
    wzs.add_argument("--model", default="tf_mobilenetv2_100", help="fgvc model name (default: tf_mobilenetv2_100)")
    wzs.add_argument("--image-size", type=int, default=224, help="input size in pixels (default: 224)")
    wzs.add_argument("--out", help="output folder (default: runs/labelmatch-<data>-<file>)")
    wzs.add_argument("--quiet", action="store_true", help="no progress bar")

    gan = sub.add_parser("gan", help="class-conditional GAN (projection discriminator): train and sample")
    gsub = gan.add_subparsers(dest="gan_command", required=True, metavar="ACTION")
    gtrain = gsub.add_parser("train", help="train a cGAN; prints the run directory")
    gtrain.add_argument("config", nargs="?", help="GAN YAML file")
    gtrain.add_argument("overrides", nargs="*", metavar="key=value")
    gtrain.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted GAN run")
    gtrain.add_argument("--quiet", action="store_true")
    gsample = gsub.add_parser("sample", help="write N generated images per class as a folder dataset")
    gsample.add_argument("run_dir")
    gsample.add_argument("--per-class", type=int, required=True)
    gsample.add_argument("--out", required=True)
    gsample.add_argument("--seed", type=int, default=0)
    gsample.add_argument("--raw", action="store_true", help="use the raw generator instead of its EMA")
    gsample.add_argument("--device", default="auto", help=DEVICE_HELP)

    st = sub.add_parser("study", help="run a whole paper table (several runs) and write its table")
    st.add_argument("study", help="shipped study name (see fgvc/configs/studies) or a YAML file")
    st.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every row, e.g. data.root=DIR")
    st.add_argument("--only", help="comma-separated row names to run")
    st.add_argument("--out", default="runs", help="parent folder of the study folder (default: runs)")
    st.add_argument("--quiet", action="store_true")
    st.add_argument("--seeds", help="run every row once per seed (train.seed=S, folder <row>/seed<S>), e.g. 0,1,2 "
                    "or 0-4; the table gives mean ± std and each seed (default: the study file's seeds, else one run)")
    lg = st.add_argument_group("launcher", "one submitit job per unfinished row (pip install 'fgvc[cluster]'); "
                               "SLURM options apply to --launcher slurm, see docs/scale.md")
    lg.add_argument("--launcher", choices=["sequential", "local", "slurm"], default="sequential",
                    help="sequential: rows one after another in this process; local: parallel processes on this "
                    "machine; slurm: a SLURM job array (default: %(default)s)")
    lg.add_argument("--detach", action="store_true",
                    help="submit and return; the last job to finish writes table.md (default: wait)")
    lg.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    lg.add_argument("--gpus-per-node", type=int, default=None,
                    help="GPUs per job (default: each row's train.devices; one task per GPU)")
    lg.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per task (default: %(default)s)")
    lg.add_argument("--mem-gb", type=int, default=None, help="memory per node in GB (default: the partition's)")
    lg.add_argument("--time", dest="time_min", type=int, default=24 * 60,
                    help="time limit per job in minutes, also for local processes (default: %(default)s)")
    lg.add_argument("--array-parallelism", type=int, default=32,
                    help="jobs running at once (SLURM array %%N; local: processes at once) (default: %(default)s)")
    lg.add_argument("--account", help="SLURM account")
    lg.add_argument("--qos", help="SLURM quality of service")
    lg.add_argument("--constraint", help="SLURM node constraint, e.g. a100")
    lg.add_argument("--setup", action="append", default=[], metavar="LINE",
                    help="shell line run before each job, repeatable (e.g. 'source .venv/bin/activate')")

    rep = sub.add_parser("report", help="Markdown + self-contained HTML report of every run below a folder: tables, "
                         "figures and each run's pictures (see docs/report.md)")
    rep.add_argument("runs_dir", metavar="RUNS_DIR", help="folder holding run directories (searched recursively)")
    rep.add_argument("--out", help="folder for report.md/report.html (default: RUNS_DIR)")

    exp = sub.add_parser("export", help="write a run's model as ONNX / TorchScript / torch.export, checked against PyTorch")
    exp.add_argument("run_dir")
    exp.add_argument("--format", dest="fmt", choices=["onnx", "torchscript", "pt2", "hf"],
                     help="default: from --out's suffix (.onnx, .pt, .pt2), else onnx; hf: a Hugging Face / timm "
                     "folder (config.json, model.safetensors, README.md; default RUN_DIR/export/hf)")
    exp.add_argument("--out", help="output file ending in .onnx/.pt/.pt2, or a folder (existing, or ending in /) "
                     "that gets model.<ext> (default: RUN_DIR/export/model.<ext>); <file>.json goes beside it")
    exp.add_argument("--batch", default="dynamic", help="'dynamic' (any batch size, default) or a fixed size N")
    exp.add_argument("--tolerance", type=float, default=1e-3,
                     help="largest abs logit difference to the PyTorch model accepted (default: 1e-3)")

    demo = sub.add_parser("demo", help="the whole tour on generated data, in minutes on a CPU")
    demo.add_argument("--out", default="fgvc-demo", help="folder for the demo's data and runs")
    demo.add_argument("--epochs", type=int, help="override the demo's epoch count (default: 12)")
    _show_defaults(p)
    return p


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends in "(default: X)" unless it already says its default (all subcommands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _show_defaults(sub)
            continue
        default = action.default
        if (default is None or default is False or default in ([], "") or default == argparse.SUPPRESS
                or action.nargs == 0
                or "default" in (action.help or "") or action.help == argparse.SUPPRESS):
            continue
        shown = str(default).replace("%", "%%")
        action.help = f"{action.help} (default: {shown})" if action.help else f"default: {shown}"


def _shipped_recipes() -> list[tuple[str, str]]:
    """(name, first description line) of each shipped recipe in fgvc/configs."""
    base = Path(__file__).parent / "configs"
    recipes = []
    for path in sorted(base.glob("*.yaml")):
        lines = [ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
        text = " ".join(ln for ln in lines if "fgvc train" not in ln)  # the first line is the command
        sentence = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0]
        recipes.append((path.stem, textwrap.shorten(sentence, 90, placeholder=" ...")))
    return recipes


def _train_epilog() -> str:
    width = max((len(name) for name, _ in _shipped_recipes()), default=0)
    lines = [f"  {name:<{width}}  {about}" for name, about in _shipped_recipes()]
    return ("shipped recipes (fgvc train NAME key=value ...):\n" + "\n".join(lines) + "\n\n"
            "config keys: `fgvc train --keys` prints every key with its default (README, \"Configuration\").\n"
            "examples:\n"
            "  fgvc train synthbirds_cpu data.root=data/synthbirds\n"
            "  fgvc train model.name=resnet18 data.name=synthbirds data.root=data/synthbirds train.epochs=5\n")


def _keys_text() -> str:
    from fgvc import config as config_mod

    defaults = config_mod.Config()
    keys = config_mod.all_keys()
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {config_mod.get(defaults, k)!r}" for k in keys)


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    # `fgvc train key=value` (no file): argparse puts the first override in `config`
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def cmd_data(args) -> int:
    if args.data_command == "synth":
        from fgvc.data import synthetic

        path = synthetic.generate(args.root, classes=args.classes, per_class=args.per_class, size=args.size,
                                  seed=args.seed, layout=args.layout, overwrite=args.overwrite)
        print(f"wrote synthbirds ({args.classes} classes, {args.per_class} images each, {args.layout} layout) to {path}")
        return 0
    if args.data_command == "prepare":
        from fgvc.data import download

        path = download.prepare(args.name, args.root, url=args.url, md5=args.md5)
        print(f"{args.name} is ready in {path}")
        return 0
    if args.data_command == "audit":
        return _data_audit(args)
    from fgvc.data import info

    d = info.describe(args.name, args.root, check=args.check)
    print(json.dumps(d, indent=2, default=str) if args.json else info.format_info(d))
    return 1 if args.check and d.get("unreadable") else 0


def _data_audit(args) -> int:
    from fgvc.audit.run import run_audit

    s = run_audit(args.name, args.root, args.out, args.what, args.against, args.threshold, args.hashes, args.run,
                  args.model, args.weights, args.image_size, args.folds, args.top, args.seed,
                  progress=not args.quiet)
    if "duplicates" in s:
        d = s["duplicates"]
        print(f"duplicates: {d['pairs']} pair(s) ({d['train_test_pairs']} train-test, {d['within_split_pairs']} "
              f"within one split, {d['against_pairs']} against other folders); {d['test_images_with_duplicate']} "
              f"of {s['test_images']} test images have a copy in train or another folder (threshold "
              f"{d['threshold']} of {d['bits']} bits)")
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
    from fgvc.train import is_main_process, metrics_table, train

    if args.keys:
        print(_keys_text())
        return 0
    if not args.resume and not args.config and not args.overrides:
        # the defaults alone are a 100-epoch ResNet-50 run: never start that by accident
        raise UserError("fgvc train needs a recipe or key=value overrides, e.g. `fgvc train synthbirds_cpu "
                        "data.root=data/synthbirds`; shipped recipes: "
                        + ", ".join(name for name, _ in _shipped_recipes())
                        + "; `fgvc train --help` explains them and `fgvc train --keys` lists every key")
    if args.resume:
        from fgvc import config as config_mod

        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        if config:
            raise UserError(f"--resume continues with the run's own config.yaml; pass only key=value overrides, "
                            f"not {config}")
        cfg = config_mod.load(runs.check_run_dir(args.resume) / "config.yaml", overrides)
        run_dir = train(cfg, run_dir=args.resume, resume=True, progress=not args.quiet)
    else:
        config, overrides = _split_config_and_overrides(args.config, args.overrides)
        cfg = _load_train_config(config, overrides)
        run_dir = train(cfg, progress=not args.quiet)
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
                      device=args.device, precision=args.precision)
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
                         localization=not args.no_localization, precision=args.precision)
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
                        precision=args.precision)
    print(result["table"])
    print("\n".join(result["files"]))
    return 0


def cmd_zeroshot(args) -> int:
    from fgvc.clip import run_zeroshot

    tag = Path(args.templates).stem if Path(args.templates).is_file() else args.templates
    out = args.out or f"runs/zeroshot-{args.data}-{args.model}-{args.pretrained}-{tag}".replace("/", "_").replace(":", "_")
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
    from fgvc.train.probe import run_probe

    config, overrides = _split_config_and_overrides(args.config, args.overrides)
    if not config and not overrides:
        raise UserError("fgvc probe needs a recipe or key=value overrides, e.g. `fgvc probe model.name=resnet50 "
                        "model.pretrained=true data.root=data`")
    cfg = _load_train_config(config, overrides)
    out = args.out or f"runs/probe-{cfg.data.name}-{cfg.model.name}"
    m = run_probe(cfg, out, progress=not args.quiet)
    print(f"linear probe on {m['feature_dim']}-d features of {cfg.model.name}: test top-1 {m['test_acc']:.4f} "
          f"(val {m['val_acc']:.4f}, weight decay {m['weight_decay']:g}, {m['seconds']:.0f} s)")
    print(out)
    return 0


def cmd_weights(args) -> int:
    if args.weights_command == "import":
        from fgvc.models.tflite import import_tflite

        if not str(args.file).endswith(".tflite"):
            raise UserError(f"fgvc weights import reads TensorFlow Lite files (.tflite), got {args.file}; "
                            ".safetensors and .pth files need no import: pass them as model.weights=FILE")
        path = import_tflite(args.file, args.out, model_name=args.model, labels=args.labels)
        print(f"wrote {path} and {path.with_suffix('.json')}; train with model.name={args.model} model.weights={path}")
        return 0
    from fgvc.models.labelmatch import run_label_match

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
    from fgvc.clip import run_finetune, run_linear_probe

    out = args.out or f"runs/clip-{args.clip_command}-{args.data}-{args.model}-{args.pretrained}".replace(
        "/", "_").replace(":", "_")
    common = dict(templates=args.templates, batch_size=args.batch_size, device=args.device,
                  num_workers=args.num_workers, download=not args.offline)
    if args.clip_command == "probe":
        metrics = run_linear_probe(args.model, args.pretrained, args.data, args.root, out, **common)
    else:
        metrics = run_finetune(args.model, args.pretrained, args.data, args.root, out, epochs=args.epochs,
                               lr=args.lr, loggers=args.loggers, **common)
    print(f"{args.clip_command}: test top-1 {metrics['test_acc']:.4f}")
    print(out)
    return 0


def cmd_study(args) -> int:
    from fgvc.experiments.study import run_study

    only = [r.strip() for r in args.only.split(",")] if args.only else None
    options = None
    if args.launcher != "sequential":
        from fgvc.experiments.launch import LaunchOptions

        options = LaunchOptions(partition=args.partition, gpus_per_node=args.gpus_per_node,
                                cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time_min,
                                array_parallelism=args.array_parallelism, account=args.account, qos=args.qos,
                                constraint=args.constraint, setup=args.setup)
    folder = run_study(args.study, args.overrides, only=only, out=args.out, progress=not args.quiet,
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
    from fgvc import config as config_mod
    from fgvc import runs
    from fgvc.data import synthetic
    from fgvc.explain.run import explain_run
    from fgvc.report import write_report
    from fgvc.robust.run import attack_run
    from fgvc.train import metrics_table, train

    out = Path(args.out)
    root = out / "synthbirds"
    if not (root / "CUB_200_2011").is_dir():
        print(f"1/5 generating synthbirds in {root} ...")
        synthetic.generate(root, classes=DEMO_DEFAULTS["classes"], per_class=DEMO_DEFAULTS["per_class"],
                           size=DEMO_DEFAULTS["size"], seed=0)
    overrides = [*DEMO_DEFAULTS["overrides"], "data.name=synthbirds", f"data.root={root}", f"out={out / 'runs'}"]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = config_mod.load(None, overrides)
    print(f"2/5 training resnet18 from scratch on synthbirds ({DEMO_DEFAULTS['classes']} classes, "
          f"chance {1 / DEMO_DEFAULTS['classes']:.3f}) ...")
    run_dir = train(cfg)
    print(metrics_table(runs.read_metrics(run_dir)))
    print("3/5 where does it look? CAM and Grad-CAM, scored against the birds' boxes ...")
    explain_run(run_dir, methods=["cam", "gradcam"], limit=6, localization_limit=96)
    print("4/5 FGSM attack across eps ...")
    attack = attack_run(run_dir, "fgsm", [0.0, 1 / 255, 4 / 255, 0.05, 0.1], limit=96, progress=False)
    print(attack["table"])
    print("5/5 report ...")
    report = write_report(out / "runs")
    print(f"run directory: {run_dir}  (explain/, attack/ inside)")
    print(f"report: {report} and {report.with_suffix('.html')}")
    fgvc = _fgvc_command()
    print(f"next: `{fgvc} serve {run_dir}` (web demo), `{fgvc} export {run_dir}` (ONNX), "
          f"`{fgvc} predict {run_dir} IMAGE`")
    return 0


def _fgvc_command() -> str:
    """How to run fgvc from this shell: `fgvc` when it is on PATH, else the script beside this Python."""
    import os
    import shutil

    if shutil.which("fgvc"):
        return "fgvc"
    script = Path(sys.executable).parent / "fgvc"  # the venv's bin/, e.g. .venv/bin/fgvc
    if script.is_file():
        try:
            relative = os.path.relpath(script)
            return relative if os.sep in relative else os.path.join(".", relative)
        except ValueError:  # another drive (Windows)
            return str(script)
    return f"{Path(sys.executable).name} -m fgvc"


HANDLERS = {
    "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "explain": cmd_explain,
    "attack": cmd_attack, "zeroshot": cmd_zeroshot, "clip": cmd_clip, "weights": cmd_weights, "probe": cmd_probe,
    "gan": cmd_gan, "study": cmd_study,
    "report": cmd_report, "demo": cmd_demo, "serve": cmd_serve,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after flags (`fgvc train --quiet train.lr=1e-3`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return HANDLERS[args.command](args)
    except UserError as e:
        # one write: the processes of a multi-device run share stderr, and print's separate newline
        # write let two sentences run into one line
        sys.stderr.write(f"fgvc: {message(e)}\n")
        sys.stderr.flush()
        _leave_process_group()
        return 2
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130


def _leave_process_group() -> None:
    """A multi-device run stopped by a UserError: close the process group before the interpreter
    exits, or gloo's threads are still alive at exit and abort the process (SIGABRT, not exit 2)."""
    torch = sys.modules.get("torch")  # never import torch here: `fgvc --help` stays light
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_exit() -> None:
    sys.exit(main())
