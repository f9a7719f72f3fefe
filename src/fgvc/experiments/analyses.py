"""A study's analyses: ``fgvc eval`` and ``fgvc attack`` run on every finished training cell, and the table
columns read from what they wrote.

A study file may name them, so that one command trains, evaluates and tabulates::

    analyses:
      eval: {tta: flip}                                         # fgvc eval RUN --tta flip
      attack: {attack: fgsm, eps: [1/255, 2/255], limit: 200}   # fgvc attack RUN --attack fgsm --eps ... --limit 200

Each cell's analyses run after it trains (and, on a re-run, for finished cells that lack them); an analysis
already done on the cell's current best checkpoint is not run again. The columns they add to the table:

- ``test_acc_tta``: test top-1 with the ``tta`` views (``eval_test.json`` ``tta.acc``), apart from ``test_acc``;
- ``test_ece`` / ``test_ece_temp``: test ECE before / after temperature scaling fitted on val
  (``calibration.test.before.ece`` / ``after.ece``);
- ``<attack>@<eps>``, e.g. ``fgsm@1/255``: accuracy under the attack on the first ``limit`` test images.

An analysis file of another checkpoint than the run's best (the run was trained further after it) gives an
empty cell, never a number of another model: eval_test.json names its checkpoint by SHA-256, the attack
file by the fingerprint ``fgvc attack`` records.
"""

from __future__ import annotations

import json
from pathlib import Path

from fgvc.errors import UserError
from fgvc.evaluation import eval_run
from fgvc.robust import parse_eps, resolve_attack
from fgvc.robust.run import attack_run, checkpoint_fingerprint
from fgvc.robust.sweep import format_eps
from fgvc.scored_checkpoint import sha256
from fgvc.tta import check_mode

BEST = Path("checkpoints") / "best.safetensors"
_FIELDS = {"eval": {"tta"}, "attack": {"attack", "eps", "limit"}}


def parse_analyses(spec, where: str) -> dict:
    """The study file's ``analyses`` mapping, checked: {"eval": {"tta": mode or None}, "attack": {"attack",
    "eps" (floats), "limit"}}, either optional; UserError naming ``where`` and the bad entry otherwise."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: analyses must be a mapping such as {{eval: {{tta: flip}}}}")
    for name, settings in spec.items():
        if name not in _FIELDS:
            raise UserError(f"{where}: unknown analysis {name!r}; use {' or '.join(_FIELDS)}")
        takes = ", ".join(sorted(_FIELDS[name]))
        if not isinstance(settings or {}, dict):
            raise UserError(f"{where}: analysis {name} takes a mapping of {takes}, not {settings!r}")
        unknown = sorted(map(str, set(settings or {}) - _FIELDS[name]))
        if unknown:
            raise UserError(f"{where}: analysis {name} takes {takes}, not {', '.join(unknown)}")
    parsed = {}
    if "eval" in spec:
        tta = (spec["eval"] or {}).get("tta")
        if tta is not None:
            check_mode(tta)
        parsed["eval"] = {"tta": tta}
    if "attack" in spec:
        settings = spec["attack"] or {}
        attack = str(settings.get("attack", "fgsm"))
        resolve_attack(attack, 0.0, None, None)  # an unknown attack: one sentence, before anything trains
        eps = settings.get("eps", "1/255,2/255")
        eps = parse_eps(",".join(map(str, eps)) if isinstance(eps, list) else str(eps))
        limit = settings.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise UserError(f"{where}: analysis attack's limit must be a whole number of images of 1 or more, "
                            f"not {limit!r}")
        parsed["attack"] = {"attack": attack, "eps": eps, "limit": limit}
    return parsed


def analysis_columns(analyses: dict) -> list[str]:
    """The table columns ``analyses`` adds, in order."""
    columns = []
    if "eval" in analyses:
        columns += (["test_acc_tta"] if analyses["eval"]["tta"] else []) + ["test_ece", "test_ece_temp"]
    if "attack" in analyses:
        a = analyses["attack"]
        columns += [f"{a['attack']}@{format_eps(e)}" for e in a["eps"]]
    return columns


def _read_json(path: Path):
    """The parsed file, or None when it is missing or unreadable (a cut-short write: the analysis runs again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _eval_file(run_dir: Path) -> Path:
    return run_dir / "eval_test.json"


def _attack_file(run_dir: Path, attack: dict) -> Path:
    return run_dir / "attack" / (attack["attack"] + ("" if attack["limit"] is None else f"_n{attack['limit']}")
                                 + ".json")


def _eval_current(run_dir: Path, tta: str | None) -> dict | None:
    """eval_test.json when it scored the run's current best checkpoint (with ``tta``'s views), else None."""
    result = _read_json(_eval_file(run_dir))
    best = run_dir / BEST
    if not isinstance(result, dict) or not best.is_file():
        return None
    if (result.get("checkpoint") or {}).get("sha256") != sha256(best):
        return None
    if tta and (result.get("tta") or {}).get("mode") != tta:
        return None
    return result


def _attack_current(run_dir: Path, attack: dict) -> dict | None:
    """{eps label: accuracy} of the run's attack file when it attacked the run's current best checkpoint (the
    fingerprint ``fgvc attack`` records for it), else None."""
    result, name = _read_json(_attack_file(run_dir, attack)), run_dir.resolve().name
    if not isinstance(result, dict) or not (run_dir / BEST).is_file():
        return None
    if (result.get("checkpoints") or {}).get(name) != checkpoint_fingerprint(run_dir):
        return None
    curve = (result.get("accuracy") or {}).get(name)
    if not isinstance(curve, dict) or any(format_eps(e) not in curve for e in attack["eps"]):
        return None
    return curve


def run_analyses(run_dir: Path, analyses: dict | None, progress: bool = True) -> bool:
    """The analyses a finished training cell lacks, on its best checkpoint; whether any ran."""
    if not analyses or not (run_dir / "metrics.json").is_file() or not (run_dir / BEST).is_file():
        return False
    ran = False
    if "eval" in analyses and _eval_current(run_dir, analyses["eval"]["tta"]) is None:
        print(f"  eval{' --tta ' + analyses['eval']['tta'] if analyses['eval']['tta'] else ''}: {run_dir}")
        eval_run(run_dir, tta=analyses["eval"]["tta"], progress=progress)
        ran = True
    if "attack" in analyses and _attack_current(run_dir, analyses["attack"]) is None:
        a = analyses["attack"]
        print(f"  attack {a['attack']}: {run_dir}")
        attack_run(run_dir, a["attack"], a["eps"], limit=a["limit"], progress=progress)
        ran = True
    return ran


def analysis_values(run_dir: Path, analyses: dict) -> dict:
    """{column: value} of ``analysis_columns(analyses)`` read from the cell's analysis files (None where an
    analysis is missing or older than the best checkpoint)."""
    values = dict.fromkeys(analysis_columns(analyses))
    if "eval" in analyses and (result := _eval_current(run_dir, analyses["eval"]["tta"])):
        test = (result.get("calibration") or {}).get("test") or {}
        values["test_ece"] = (test.get("before") or {}).get("ece")
        values["test_ece_temp"] = (test.get("after") or {}).get("ece")
        if analyses["eval"]["tta"]:
            values["test_acc_tta"] = result["tta"].get("acc")
    if "attack" in analyses and (curve := _attack_current(run_dir, analyses["attack"])):
        a = analyses["attack"]
        for e in a["eps"]:
            values[f"{a['attack']}@{format_eps(e)}"] = curve[format_eps(e)]
    return values


__all__ = ["analysis_columns", "analysis_values", "parse_analyses", "run_analyses"]
