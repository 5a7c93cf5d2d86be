"""The package's layers import one way: core <- engine <- tracking <- app <- the entry points.

    core/      the math: numpy and scipy only, nothing else of pgpong
    engine/    emulators, rollout, trainer, training state, checkpoints: core and the base modules
    tracking/  MLflow, the multirun parent run, run names: the base modules, never the engine
    app        config, launch (compose, start, train_run), cli, cliargs: the layers below, never
               an entry point
    the rest   entry points (run, sweep, report, play, bench)

The base modules (errors, paths, files, interrupt) import nothing of pgpong but each other.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pgpong"
BASE = {"pgpong.errors", "pgpong.paths", "pgpong.files", "pgpong.interrupt"}
APP = {"pgpong.config", "pgpong.launch", "pgpong.cli", "pgpong.cliargs"}
ALLOWED = {  # layer -> the pgpong modules/packages it may import
    "core": ("pgpong.core",),
    "app": ("pgpong.core", "pgpong.engine", "pgpong.tracking", *APP, *BASE),
    "engine": ("pgpong.core", "pgpong.engine", *BASE),
    "tracking": ("pgpong.core", "pgpong.tracking", *BASE),
    "base": tuple(BASE),
}


def layer_of(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root)
    if len(rel.parts) > 1 and rel.parts[0] in ALLOWED:
        return rel.parts[0]
    name = ".".join(("pgpong", *rel.with_suffix("").parts))     # pgpong/sweep/launch.py: pgpong.sweep.launch
    return "base" if name in BASE else "app" if name in APP else "entry"


def pgpong_imports(path: Path) -> list[str]:
    """Every pgpong module a file imports, at any depth of the file (lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            is_package = (PACKAGE.parent / node.module.replace(".", "/")).is_dir()
            names += [f"{node.module}.{a.name}" for a in node.names] if is_package else [node.module]
    return [n for n in names if n == "pgpong" or n.startswith("pgpong.")]


def violations(files, root: Path = PACKAGE) -> list[str]:
    bad = []
    for f in files:
        layer = layer_of(f, root)
        if layer == "entry":
            continue
        for name in pgpong_imports(f):
            if not any(name == a or name.startswith(a + ".") for a in ALLOWED[layer]):
                bad.append(f"{f.relative_to(root.parent)} ({layer}) imports {name}")
    return bad


def test_each_layer_imports_only_the_layers_below_it():
    files = sorted(PACKAGE.rglob("*.py"))
    assert {layer_of(f) for f in files} >= {"core", "engine", "tracking", "app", "base", "entry"}
    assert not violations(files), "\n".join(violations(files))


@pytest.mark.parametrize("layer,line,imported", [
    ("core", "from pgpong.engine.envs import make_envs", "pgpong.engine.envs"),
    ("core", "from pgpong import errors", "pgpong.errors"),
    ("engine", "from pgpong.tracking.tracker import NullTracker", "pgpong.tracking.tracker"),
    ("tracking", "from pgpong.engine import checkpoint", "pgpong.engine.checkpoint"),
    ("app", "from pgpong.sweep.study import compose", "pgpong.sweep.study"),
])
def test_an_upward_import_is_caught_even_inside_a_function(tmp_path, layer, line, imported):
    root = tmp_path / "pgpong"
    probe = root / layer / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"def f():\n    {line}\n")
    assert violations([probe], root) == [f"pgpong/{layer}/probe.py ({layer}) imports {imported}"]
