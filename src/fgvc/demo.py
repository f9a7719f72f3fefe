"""`fgvc demo`: the main job on generated data, end to end in a minute or two on a laptop CPU:
generate fine-grained birds, train resnet18 from scratch, explain (CAM, Grad-CAM scored against the
birds' boxes), attack (FGSM across eps), write the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fgvc import config as config_mod
from fgvc import runs
from fgvc.data import synthetic
from fgvc.explain.run import explain_run
from fgvc.report import write_report
from fgvc.robust.run import attack_run
from fgvc.train import metrics_table, train

# The demo's recipe: resnet18 from scratch on generated birds, small enough for a laptop CPU.
DEMO_DEFAULTS = {
    "classes": 8, "per_class": 80, "size": 64,
    "overrides": ["model.name=resnet18", "data.image_size=64", "train.epochs=12", "train.batch_size=32",
                  "train.lr=2e-3", "train.milestones=[9]", "train.patience=0", "data.num_workers=0"],
}


def run_demo(out: Path, epochs: int | None = None) -> Path:
    """Run the demo under ``out`` (``synthbirds/``, ``runs/``; generated data is reused when present);
    ``epochs`` overrides the recipe's 12. Returns the run directory; prints each step and the next commands."""
    out = runs.check_out_dir(out, "--out")
    root = out / "synthbirds"
    if not (root / "CUB_200_2011").is_dir():
        print(f"1/5 generating synthbirds in {root} ...")
        synthetic.generate(root, classes=DEMO_DEFAULTS["classes"], per_class=DEMO_DEFAULTS["per_class"],
                           size=DEMO_DEFAULTS["size"], seed=0)
    else:  # an earlier demo's data (generation is atomic: a folder that exists is whole)
        print(f"1/5 reusing the birds generated in {root} by an earlier demo (delete it to generate them again)")
    overrides = [*DEMO_DEFAULTS["overrides"], "data.name=synthbirds", f"data.root={root}", f"out={out / 'runs'}"]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
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
    fgvc = fgvc_command()
    print(f"next: `{fgvc} serve {run_dir}` (web demo), `{fgvc} export {run_dir}` (ONNX), "
          f"`{fgvc} predict {run_dir} IMAGE`")
    return run_dir


def fgvc_command() -> str:
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
