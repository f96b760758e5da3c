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


# ------------------------------------------------------------------------------------------- the library's layers
#: The packages and root modules of ``emollm/``, lowest first. A unit may import its own layer and the layers below,
#: never one above (the README's "Architecture" section draws the same tower). ``emollm/__init__.py`` (the lazy
#: public face) and ``cli.py`` (the lazy dispatch table) sit on top of everything.
LAYERS: list[set[str]] = [
    {"utils", "labels", "settings"},  # foundations: no emollm imports beyond each other
    {"media", "aus", "backbones"},  # decoded media, action units, LLM families and their loading
    {"encoders"},  # modality encoders (+ the precomputed-feature "encoder")
    {"model"},  # the multimodal model core: configuration, modeling, projectors, processing, LoRA, generation
    {"checkpoints", "data", "scoring"},  # checkpoint folders and imports; datasets; answer scoring and rewards
    {"runconfig", "clues", "fusion"},  # run configs; zero-shot evidence; classic fusion baselines
    {"jobs", "engines"},  # corpus jobs: feature extraction, batch decoding; generation engines (local, server, vLLM)
    {"apps"},  # analyze/clue mode, chat, assess, serve, demo
    {"planning", "testing"},  # memory planning of whole runs; test helpers
]
_LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
_ROOT_OK = {"__init__", "__main__", "cli"}


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_imports() -> dict[str, set[str]]:
    """Module -> the emollm modules it imports (module level and inside functions)."""
    graph: dict[str, set[str]] = {}
    paths = sorted((REPO / "emollm").rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    for path in paths:
        module = _module_name(path)
        package = list(path.relative_to(REPO).parts[:-1])
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                if base == "emollm" and {a.name for a in node.names} == {"__version__"}:
                    continue  # the version string is the one thing everyone may take from the package face
                if base.startswith("emollm"):
                    # ``from emollm.x import y`` names the submodule emollm.x.y, or a name defined in emollm.x
                    subs = {f"{base}.{a.name}" for a in node.names}
                    deps |= subs if subs <= modules else subs | {base}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("emollm")}
        graph[module] = deps - {module}
    known = set(graph)
    return {m: {d for d in deps if d in known} for m, deps in graph.items()}


def test_every_library_unit_has_a_layer():
    units = {_unit(m) for m in _library_imports()} - _ROOT_OK
    assert units <= set(_LAYER_OF), f"add these to LAYERS (and the README's Architecture): {units - set(_LAYER_OF)}"


def test_no_import_runs_up_a_layer():
    bad = []
    for module, deps in _library_imports().items():
        unit = _unit(module)
        if unit in _ROOT_OK:
            continue
        for dep in deps:
            dep_unit = _unit(dep)
            if dep_unit == "__init__" and dep == "emollm":
                bad.append(f"{module} imports the package face 'emollm'; import the defining module")
            elif dep_unit not in _ROOT_OK and _LAYER_OF[dep_unit] > _LAYER_OF[unit]:
                bad.append(f"{module} ({unit}, {_LAYER_OF[unit]}) imports {dep} ({dep_unit}, {_LAYER_OF[dep_unit]})")
    assert not bad, "imports that run up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = _library_imports()
    # A package's face (__init__) imports its own submodules; a circle through a face is still a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_root_stays_small_and_packages_say_what_they_hold():
    root = sorted(p.name for p in (REPO / "emollm").glob("*.py"))
    assert len(root) <= 10, f"emollm/ root has {len(root)} modules: {root}; give new code a package"
    for init in (REPO / "emollm").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc.lower(), f"{init.relative_to(REPO)}: open with a docstring that says what the "
        "package holds and what it may import"
