"""The package's layers: every import in src/fgvc (at module level and inside functions) points down
or sideways within a layer, no import chain comes back to where it started, and no module reaches into
another module's private (``_underscore``) names.

``LAYERS`` is the table of docs/architecture.md, ground first. A module's layer is the entry with the
longest matching dotted prefix, so a module may sit above the rest of its folder (``fgvc.clip.finetune``
drives the training loop, so it sits with the analyses). A module the table does not place fails the
test: a new file is given its floor on purpose. Entries for packages that do not exist yet
(``fgvc.methods`` while it is being written) place nothing and break nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = [
    ("ground", ["fgvc.errors", "fgvc.config", "fgvc.config_ranges", "fgvc.runs", "fgvc.devices", "fgvc.protocol",
                "fgvc.scored_checkpoint", "fgvc.install", "fgvc.openmp", "fgvc.shipped"]),
    ("data and models", ["fgvc.data", "fgvc.models", "fgvc.metrics"]),
    ("clip models", ["fgvc.clip"]),
    ("methods", ["fgvc.methods"]),
    ("api", ["fgvc.api"]),
    ("techniques", ["fgvc.train", "fgvc.robust", "fgvc.explain", "fgvc.gan"]),
    ("analyses", ["fgvc.evaluation", "fgvc.calibration", "fgvc.openset", "fgvc.tta", "fgvc.predict",
                  "fgvc.export", "fgvc.export_hf", "fgvc.model_card", "fgvc.serve", "fgvc.audit", "fgvc.clip.finetune", "fgvc.pretrained"]),
    ("studies", ["fgvc.experiments", "fgvc.report", "fgvc.demo"]),
    ("commands", ["fgvc.commands"]),
    ("cli", ["fgvc.cli", "fgvc.cli_data", "fgvc.__main__", "fgvc"]),
]


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest prefix of ``module`` the table names; None when none does."""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            inside = module == p or (module.startswith(p + ".") and p != "fgvc")  # the root entry is the face alone
            if inside and p.count(".") > depth:
                best, depth = i, p.count(".")
    return best


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str, src: Path) -> bool:
    p = src.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports(path: Path, src: Path):
    """``(line, target module, imported names)`` for every fgvc import in ``path``, at any depth."""
    here = module_name(path, src)
    package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "fgvc":
                    yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "fgvc":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                yield (node.lineno, sub, []) if is_module(sub, src) else (node.lineno, base, [a.name])


def graph(src: Path = SRC):
    """``{module: [(line, target, names)]}`` over every module of src/fgvc. An import of the package
    root itself (``import fgvc`` for ``__version__``) is no arrow: Python runs fgvc/__init__.py, the
    public face, before any module of the package."""
    edges = {}
    for path in sorted((src / "fgvc").rglob("*.py")):
        me = module_name(path, src)
        edges[me] = [(line, t, names) for line, t, names in imports(path, src) if t != "fgvc" and t != me]
    return edges


def upward_imports(edges) -> list[str]:
    return sorted({f"{m}:{line} imports {t} ({LAYERS[layer_of(t)][0]}) from below ({LAYERS[layer_of(m)][0]})"
                   for m, out in edges.items() for line, t, _ in out
                   if layer_of(t) is not None and layer_of(m) is not None and layer_of(t) > layer_of(m)})


def cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []
    targets = {m: sorted({t for _, t, _ in out if t in edges}) for m, out in edges.items()}

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in targets[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def private_imports(edges) -> list[str]:
    return [f"{m}:{line} imports {t}.{n}" for m, out in edges.items() for line, t, names in out
            for n in names if n.startswith("_") and not n.startswith("__")]


@pytest.fixture(scope="module")
def edges():
    return graph()


def test_every_module_has_a_layer(edges):
    unplaced = sorted(m for m in edges if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layers.py::LAYERS: {unplaced}"


def test_no_import_points_up(edges):
    up = upward_imports(edges)
    assert not up, "imports from a lower layer to a higher one:\n" + "\n".join(up)


def test_no_import_cycles(edges):
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(", ".join(c) for c in found)


def test_no_module_imports_another_modules_private_names(edges):
    found = private_imports(edges)
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def test_the_checks_see_imports_inside_functions_and_both_faults(tmp_path):
    """The walk reads an import inside a function, and reports an upward import and a cycle."""
    pkg = tmp_path / "fgvc"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "runs.py").write_text("def load():\n    from fgvc.train import loop\n")
    (pkg / "train" / "loop.py").write_text("from fgvc import runs\nfrom fgvc.errors import _hidden\n")
    edges = graph(tmp_path)
    assert upward_imports(edges) == ["fgvc.runs:2 imports fgvc.train.loop (techniques) from below (ground)"]
    assert cycles(edges) == [["fgvc.runs", "fgvc.train.loop"]]
    assert private_imports(edges) == ["fgvc.train.loop:2 imports fgvc.errors._hidden"]
