"""The house rules of the layout: the library imports no recipe, recipes do not import each other, installs claim
no generic top-level name, and the CLI's boundary (version, extras hints, third-party noise)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from emollm import cli

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"emollm_train": "train", "emollm_eval": "eval", "emollm_merr": "merr"}
# Downward imports between recipes that the layout allows: the backbone benchmark runs the training recipe.
ALLOWED = {("eval/compare.py", "emollm_train")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", ["emollm", "train", "eval", "merr", "bench", "tests"])
def test_no_generic_top_level_imports(folder):
    bad = [
        f"{p.relative_to(REPO)} imports {n}"
        for p in (REPO / folder).rglob("*.py")
        for n in _imports(p) & {"train", "eval", "merr"}
    ]
    assert not bad, "import the recipes by their installed names (emollm_train/_eval/_merr):\n" + "\n".join(bad)


def test_library_imports_no_recipe():
    bad = [
        f"{p.relative_to(REPO)} imports {n}"
        for p in (REPO / "emollm").rglob("*.py")
        for n in _imports(p) & set(RECIPES)
    ]
    assert not bad, "shared code belongs in emollm/:\n" + "\n".join(bad)


def test_recipes_do_not_import_each_other():
    bad = []
    for name, folder in RECIPES.items():
        for p in (REPO / folder).rglob("*.py"):
            rel = p.relative_to(REPO).as_posix()
            for other in _imports(p) & (set(RECIPES) - {name}):
                if (rel, other) not in ALLOWED:
                    bad.append(f"{rel} imports {other}")
    assert not bad, "\n".join(bad)


def test_pyproject_lists_every_package_under_non_generic_names():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "emollm").rglob("__init__.py")}
    assert set(conf["packages"]) == found | set(RECIPES)
    assert conf["package-dir"] == RECIPES
    assert not {"train", "eval", "merr"} & {p.split(".")[0] for p in conf["packages"]}


def test_version(capsys):
    import emollm

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"emollm {emollm.__version__}"


def test_missing_extra_names_the_pip_command(monkeypatch, capsys):
    def missing(name):
        raise ModuleNotFoundError("No module named 'decord'", name="decord")

    monkeypatch.setattr(cli.importlib, "import_module", missing)
    assert cli.main(["features", "extract"]) == 1
    assert "pip install 'emollm[media]'" in capsys.readouterr().err


def test_third_party_noise_is_filtered_at_the_boundary():
    code = (
        "import warnings; from emollm.cli import quiet_third_party; quiet_third_party(); import bitsandbytes; "
        "import transformers.modeling_utils as m; warnings.warn_explicit('old', FutureWarning, 'x.py', 1, "
        "module='transformers.modeling_utils')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kernels-community" not in out.stderr + out.stdout
    assert "FutureWarning" not in out.stderr
