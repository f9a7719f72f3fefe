"""The one `fgvc` command. Only this module parses argv; library code takes explicit arguments.

The argument table is here; the handlers (``fgvc.commands``) take the parsed namespace and return
an exit code. A UserError anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys

from fgvc.cli_data import add_data_parser
from fgvc.commands import HANDLERS
from fgvc.errors import UserError, message
from fgvc.install import install_command
from fgvc.shipped import CONFIGS, shipped_recipes, shipped_studies


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

    add_data_parser(sub)
    _add_run_parsers(sub)
    _add_attack_and_clip_parsers(sub)
    _add_model_parsers(sub)
    _add_study_parsers(sub)
    _add_output_parsers(sub)
    _show_defaults(p)
    return p


def _add_run_parsers(sub) -> None:
    """The subcommands training a run and reading it: train, eval, predict, explain, serve."""
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
    ex.add_argument("--method", help="comma list of cam, gradcam, gradcam++, attention (a WS-DAN or CAL "
                    "run's own attention maps) (default: cam,gradcam)")
    ex.add_argument("--split", default="test", choices=["train", "val", "test"])
    ex.add_argument("--limit", type=int, default=8, help="images to draw from the split")
    ex.add_argument("--out", help="output folder (default: RUN_DIR/explain)")
    ex.add_argument("--save-maps", action="store_true", help="also write the raw maps (safetensors)")
    ex.add_argument("--no-localization", action="store_true", help="skip the box-overlap scores")
    ex.add_argument("--device", default="auto", help=DEVICE_HELP)
    ex.add_argument("--precision", default="run", choices=["run", "32-true", "bf16-mixed", "16-mixed"],
                    help=PRECISION_HELP)

    sv = sub.add_parser("serve", help="web demo of a run: top-5 classes, Grad-CAM and an FGSM slider "
                        f"(needs the serve extra: {install_command('serve')})")
    sv.add_argument("run_dir")
    sv.add_argument("--port", type=int, default=7860, help="port to listen on, 0 picks a free one (default: 7860)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 listens on every "
                    "interface, with no authentication (default: 127.0.0.1)")


def _add_attack_and_clip_parsers(sub) -> None:
    """The subcommands attack, and CLIP's zeroshot / clip probe / clip finetune."""
    at = sub.add_parser("attack", help="accuracy under FGSM / I-FGSM / RS-FGSM / PGD across eps, with plot and gallery")
    at.add_argument("run_dir")
    at.add_argument("--attack", default="fgsm", choices=AttackNames(), metavar="ATTACK",
                    help="one of %(choices)s (default: %(default)s)")
    at.add_argument("--eps", default="seed",
                    help="comma list (0,0.05,8/255) or 'seed' (0..0.3) or 'standard' (1,2,4,8/255)")
    at.add_argument("--alpha", type=float, help="step size for ifgsm, rs-fgsm and pgd (default: the attack's own)")
    at.add_argument("--steps", type=int, help="steps for ifgsm and pgd (default: the attack's own)")
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
    ft.add_argument("--resume", action="store_true", help="continue OUT from its last finished epoch")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    ft.add_argument("overrides", nargs="*", metavar="key=value",
                    help="any fgvc train key, applied last (e.g. aug.mixup_alpha=0.2 train.patience=3)")


def _add_model_parsers(sub) -> None:
    """The subcommands probe, weights, gan: models outside a training run."""
    probe = sub.add_parser("probe", help="linear probe (logistic regression) on a frozen backbone's features",
                           description="Fit an L2-regularised logistic regression on the frozen features of the "
                                       "model a recipe and key=value overrides describe (model.weights, "
                                       "model.pretrained), weight decay chosen on val; prints test top-1.")
    probe.add_argument("config", nargs="?", help="YAML file or shipped recipe name")
    probe.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, e.g. model.weights=FILE")
    probe.add_argument("--out", help="output folder, refused when it holds a finished probe (default: a new folder "
                       "OUT/probe-<data>-<model>, with -2, -3, ... when taken; OUT is the config key out, runs)")
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


def _add_study_parsers(sub) -> None:
    """The subcommands study and its launcher options."""
    st = sub.add_parser("study", help="run a whole paper table (several runs) and write its table",
                        epilog=_study_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("study", help="shipped study name (listed below) or a YAML file")
    st.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every row, e.g. data.root=DIR")
    st.add_argument("--only", help="comma-separated row names to run")
    st.add_argument("--data", metavar="NAME", help="run every row on dataset NAME (the same as data.name=NAME; "
                    "a key=value override given too wins), e.g. table4_tricks on dogs")
    st.add_argument("--out", default="runs", help="parent folder of the study folder (default: runs)")
    st.add_argument("--quiet", action="store_true")
    st.add_argument("--seeds", help="run every row once per seed (train.seed=S, folder <row>/seed<S>), e.g. 0,1,2 "
                    "or 0-4; the table gives mean ± std and each seed, counting the study file's finished seeds too "
                    "(default: the study file's seeds, else one run)")
    lg = st.add_argument_group("launcher", "one submitit job per unfinished row, or (row, seed) with --seeds "
                               f"(needs the cluster extra: {install_command('cluster')}); "
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


def _add_output_parsers(sub) -> None:
    """The subcommands report, export, demo."""
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


def _train_epilog() -> str:
    width = max((len(name) for name, _ in shipped_recipes()), default=0)
    lines = [f"  {name:<{width}}  {about}" for name, about in shipped_recipes()]
    return ("shipped recipes (fgvc train NAME key=value ...):\n" + "\n".join(lines) + "\n\n"
            "config keys: `fgvc train --keys` prints every key with its default (README, \"Configuration\").\n"
            "examples:\n"
            "  fgvc train synthbirds_cpu data.root=data/synthbirds\n"
            "  fgvc train model.name=resnet18 data.name=synthbirds data.root=data/synthbirds train.epochs=5\n")


def _study_epilog() -> str:
    lines = [f"  {name}: {title}\n      {command}" for name, title, command in shipped_studies()]
    return ("shipped studies (each file's header says more; a YAML file of your own works the same way):\n"
            + "\n".join(lines) + "\n\n"
            "PATH_TO_BIRDS50: 50 CUB-200-2011 species, made by `fgvc data birds50 --cub CUB_DIR --out PATH_TO_BIRDS50`\n"
            "(docs/data.md); WEIGHTS_DIR: the folder of the MobileNetV2 TensorFlow Lite files (docs/weights.md);\n"
            "~/data: CUB-200-2011 (and Stanford Dogs for table9) from `fgvc data prepare cub200|dogs --root ~/data`;\n"
            "the table studies fetch ImageNet or CLIP weights into the torchvision / timm / open_clip caches once.\n"
            f"study files: {CONFIGS / 'studies'}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after flags (`fgvc train --quiet train.lr=1e-3`)
    args, extra = parser.parse_known_args(argv)
    extra = _take_data_root(parser, args, extra)
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
    except KeyboardInterrupt as e:
        hint = INTERRUPTED_HINTS.get(args.command if args.command != "gan" else f"gan {args.gan_command}", "")
        resumed = getattr(args, "resume", None)
        run_dir = getattr(e, "run_dir", None) or (resumed if isinstance(resumed, str) else None)  # holds the work
        hint = hint.replace("RUN_DIR` (the run directory printed above)", f"{run_dir}`") if run_dir else hint
        print(f"fgvc: interrupted{hint}", file=sys.stderr)
        return 130


# analyses that read a run's dataset: `fgvc eval RUN data.root=NEW` reads it from the folder it moved to
DATA_ROOT_COMMANDS = ("eval", "explain", "attack")


def _take_data_root(parser: argparse.ArgumentParser, args, extra: list[str]) -> list[str]:
    """``args.data_root`` from a ``data.root=DIR`` word of an analysis command (after the run directory, or
    among explain's image files); ``extra`` without it. Any other key=value is refused: the rest of a run's
    settings are its own."""
    if args.command not in DATA_ROOT_COMMANDS:
        return extra
    words = [*extra, *getattr(args, "images", [])]
    keys = [w for w in words if re.match(r"^[a-z_]+\.[a-z_.]+=", w)]
    other = [w for w in keys if not w.startswith("data.root=")]
    if other:
        parser.error(f"fgvc {args.command} takes one setting, data.root=DIR (the run's dataset in the folder it "
                     f"moved to), not {other[0]}: the run's other settings are its own")
    args.data_root = next((w.split("=", 1)[1] for w in reversed(keys)), None)
    if hasattr(args, "images"):
        args.images = [w for w in args.images if w not in keys]
    return [w for w in extra if w not in keys]


# what continues a long command after ^C: finished epochs, study rows and GAN checkpoints are kept
INTERRUPTED_HINTS = {
    "train": "; finished epochs are kept: `fgvc train --resume RUN_DIR` (the run directory printed above) continues",
    "study": "; finished rows are kept: the same `fgvc study` command continues with the row that was running",
    "gan train": "; `fgvc gan train --resume RUN_DIR` (the run directory printed above) continues from the last "
                 "checkpoint (saved every checkpoint_every iterations)",
}


def _leave_process_group() -> None:
    """A multi-device run stopped by a UserError: close the process group before the interpreter
    exits, or gloo's threads are still alive at exit and abort the process (SIGABRT, not exit 2)."""
    torch = sys.modules.get("torch")  # never import torch here: `fgvc --help` stays light
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_exit() -> None:
    sys.exit(main())
