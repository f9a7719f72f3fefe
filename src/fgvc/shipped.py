"""The recipes and studies shipped in fgvc/configs, as `fgvc train --help` and `fgvc study --help` list them: read
from each file's header and title, without importing torch or parsing the configs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


def shipped_recipes() -> list[tuple[str, str]]:
    """(name, first description line) of each shipped recipe in fgvc/configs."""
    recipes = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        lines = [ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
        # the first line is the command; lines in parentheses say how to run it (environment, data)
        text = " ".join(ln for ln in lines if "fgvc train" not in ln and not ln.startswith("("))
        sentence = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0]
        recipes.append((path.stem, textwrap.shorten(sentence, 90, placeholder=" ...")))
    return recipes


def shipped_studies() -> list[tuple[str, str, str]]:
    """(name, title, command) of each shipped study in fgvc/configs/studies: its ``title:`` and the first command of
    its header, with ``FGVC_WEIGHTS=WEIGHTS_DIR`` in front where the header says the study needs the weights."""
    studies = []
    for path in sorted((CONFIGS / "studies").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        header = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
        title = re.search(r"^title:\s*(.+)$", text, re.MULTILINE)
        command = next((ln for ln in header if ln.startswith("fgvc study")), f"fgvc study {path.stem}")
        weights = "FGVC_WEIGHTS=WEIGHTS_DIR " if any("FGVC_WEIGHTS" in ln for ln in header) else ""
        studies.append((path.stem, textwrap.shorten(title.group(1) if title else "", 100, placeholder=" ..."),
                        weights + command))
    return studies
