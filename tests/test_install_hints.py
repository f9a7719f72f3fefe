"""Install hints fit how fgvc was installed: an editable clone, a folder, a wheel file, a package index or
a checkout on PYTHONPATH; and every missing-extra refusal (serve, export, audit, cluster) gives that hint."""

import json
from pathlib import Path

import pytest

from fgvc.cli import main
from fgvc.install import extra_packages, install_command, install_target


class FakeDist:
    """An importlib.metadata distribution with a chosen direct_url.json and requirements."""

    def __init__(self, direct_url: dict | None, requires=("torch>=2.4", 'fastapi>=0.165; extra == "serve"',
                                                           'uvicorn>=0.29 ; extra == "serve"',
                                                           'submitit>=1.5; extra == "cluster"')):
        self.direct_url, self.requires = direct_url, list(requires)

    def read_text(self, name):
        return json.dumps(self.direct_url) if name == "direct_url.json" and self.direct_url is not None else None


NOT_A_CHECKOUT = Path("/nonexistent-checkout")


@pytest.mark.parametrize("direct_url, expected", [
    (None, "pip install 'fgvc[serve]'"),  # from a package index: no direct_url.json
    ({"url": "file:///home/me/fgvc", "dir_info": {"editable": True}}, "pip install -e '/home/me/fgvc[serve]'"),
    ({"url": "file:///home/me/fgvc", "dir_info": {}}, "pip install '/home/me/fgvc[serve]'"),
    ({"url": "file:///tmp/dist/fgvc-0.1.0-py3-none-any.whl", "archive_info": {}},
     "pip install '/tmp/dist/fgvc-0.1.0-py3-none-any.whl[serve]'"),
    ({"url": "file:///home/me/my%20fgvc", "dir_info": {"editable": True}}, "pip install -e '/home/me/my fgvc[serve]'"),
])
def test_hint_follows_the_installers_record(direct_url, expected):
    dist = FakeDist(direct_url)
    assert install_command("serve", dist, NOT_A_CHECKOUT) == f"{expected}, or pip install fastapi uvicorn"
    assert extra_packages("cluster", dist) == ["submitit>=1.5"] and extra_packages("nope", dist) == []


def test_a_checkout_gets_its_own_editable_install(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "fgvc"\nversion = "0.1.0"\n')
    # even where another fgvc is installed: the code that runs is the checkout's
    other = FakeDist({"url": "file:///elsewhere", "dir_info": {"editable": True}})
    assert install_target(other, tmp_path) == ("source", str(tmp_path))
    assert install_command("audit", other, tmp_path).startswith(f"pip install -e '{tmp_path}[audit]'")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert install_target(other, tmp_path) == ("editable", "/elsewhere")


def test_this_checkout_names_its_own_extras():
    # the tests run from a checkout: the hint is its editable install, with pyproject's packages
    root = Path(__file__).resolve().parents[1]
    assert install_target()[0] in ("source", "editable")
    assert install_command("serve").startswith(f"pip install -e '{root}[serve]'")
    for extra, package in (("serve", "fastapi"), ("export", "onnxruntime"), ("audit", "imagehash"),
                           ("cluster", "submitit")):
        assert package in install_command(extra).split(", or pip install ")[1]


def _hide(monkeypatch, *modules):
    """``modules`` look uninstalled: find_spec finds nothing and importing them fails."""
    import importlib.util
    import sys

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real_find(name, *a))
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("extra, hidden, call", [
    ("export", "onnx", lambda: __import__("fgvc.export", fromlist=["_require_onnx"])._require_onnx()),
    ("cluster", "submitit", lambda: __import__("fgvc.experiments.launch", fromlist=["submitit"]).submitit()),
    ("audit", "imagehash", lambda: __import__("fgvc.audit", fromlist=["require"]).require("imagehash")),
    ("serve", "fastapi", lambda: __import__("fgvc.serve", fromlist=["check_installed"]).check_installed()),
])
def test_every_missing_extra_names_the_fitting_command(extra, hidden, call, monkeypatch):
    import fgvc.audit  # noqa: F401 (each module imported before its extra is hidden)
    import fgvc.experiments.launch  # noqa: F401
    import fgvc.export  # noqa: F401
    import fgvc.serve  # noqa: F401
    from fgvc.errors import UserError

    _hide(monkeypatch, hidden)
    with pytest.raises(UserError) as e:
        call()
    assert install_command(extra) in str(e.value) and "fgvc[" not in str(e.value)


def test_help_gives_the_fitting_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "pip install 'fgvc[serve]'" not in capsys.readouterr().out
