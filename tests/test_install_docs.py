"""The install and the README's first steps: no setuptools licence warnings, visible
install progress, how to run fgvc after `make demo`, long tour lines say so."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_licence_is_an_spdx_string_with_a_setuptools_that_reads_it():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib: Python 3.10 is supported
    # a TOML table (license = { text = "MIT" }) makes setuptools warn three times on every install
    assert re.search(r'^license = "MIT"$', text, re.M)
    requires = re.search(r"^requires = (.*)$", text, re.M).group(1)
    version = re.search(r"setuptools>=(\d+)", requires)
    assert version and int(version.group(1)) >= 77


def test_makefile_install_shows_progress_and_says_how_to_run_fgvc():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    install = [line for line in makefile.splitlines() if "pip install" in line and "-e" in line]
    assert install and all(" -q" not in line for line in install)
    assert "bin/activate" in makefile


def test_readme_says_how_to_run_fgvc_right_after_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
    after = readme.split("```")[2].split("\n\n")[1]
    assert ".venv/bin/fgvc" in after and "source .venv/bin/activate" in after
    attack = next(line for line in readme.splitlines() if line.startswith("fgvc attack RUN_DIR"))
    assert "--limit" in attack
