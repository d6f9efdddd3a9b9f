"""What each script imports, read from the source with ast (no process started, nothing imported).

A script's closure: every import in the script (its functions' too: main runs them), then the module-level imports
of each project module reached, followed transitively. An import inside a library function is left out: it runs
only when that function is called, which is why heavy imports are written there.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"utils", "datasets", "models", "training", "sweeps", "deploy"} | {path.stem for path in ROOT.glob("*.py")}
TORCH = {"torch", "torchvision", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "timm", "kornia"}
LIGHTNING = {"pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics"}
SCRIPTS = ("train", "sweep", "predict", "evaluate", "export_model", "compare_runs", "prepare_stanford_dataset")
TOOLS_AFTER_TRAINING = ("predict", "evaluate", "export_model", "compare_runs")


def source_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    return next((path for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()), None)


def _statements(body: list[ast.stmt], module_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run when the module loads (module_level) or anywhere in it; TYPE_CHECKING left out."""
    found = []
    for node in body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found += _statements(node.orelse, module_level)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not (module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for field in ("body", "orelse", "finalbody", "handlers"):
                found += _statements(getattr(node, field, None) or [], module_level)
    return found


def imported_names(path: Path, module_level: bool) -> set[str]:
    names = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8")).body, module_level):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def closure(script: str, script_module_level: bool = False) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level packages) that running ``script`` imports."""
    project, packages, pending = set(), set(), [script]
    while pending:
        name = pending.pop()
        if name in project:
            continue
        project.add(name)
        parts = name.split(".")
        for path in filter(None, (source_of(".".join(parts[:end])) for end in range(1, len(parts) + 1))):
            for imported in imported_names(path, script_module_level or name != script):
                (pending.append(imported) if imported.split(".")[0] in PROJECT
                 else packages.add(imported.split(".")[0]))
    return project, packages


def test_the_closure_follows_module_level_imports_and_leaves_library_functions_out():
    project, packages = closure("train")
    assert {"training.run", "models.classifier_module", "utils.config"} <= project
    assert "pytorch_lightning" in packages
    assert "torch" not in closure("train", script_module_level=True)[1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_arguments_and_configuration_are_checked_before_torch_is_imported(script):
    """--help and a configuration error come from the scripts' module-level imports: none of them is torch's."""
    _, packages = closure(script, script_module_level=True)
    assert packages & TORCH == set()


@pytest.mark.parametrize("script", TOOLS_AFTER_TRAINING)
def test_the_tools_after_training_import_no_lightning_or_torchmetrics(script):
    project, packages = closure(script)
    assert packages & LIGHTNING == set()
    assert not {"models.classifier_module", "datasets.stanford_data_module"} & project


def test_training_imports_no_raw_file_readers_or_scipy():
    project, packages = closure("train")
    assert sorted(name for name in project if name.startswith(("datasets.raw", "datasets.preparation"))) == []
    assert "scipy" not in packages


def test_training_imports_no_plotting():
    """train.py trains through training.run, which gives MLflow the run table's columns (utils.runs.table);
    plotting (utils.runs.plots, matplotlib) belongs to what comes after training. (The installed torchmetrics
    imports matplotlib itself when it is installed: the check is on the project's modules.)"""
    project, packages = closure("train")
    assert {"training.run", "utils.runs.table"} <= project
    assert not [name for name in project if name.startswith("utils.runs.plots")] and "matplotlib" not in packages


def test_loading_a_config_imports_no_torch_lightning_datasets_or_models():
    project, packages = closure("utils.config")
    assert "utils.config.validation" in project and {"pydantic", "yaml"} <= packages
    assert packages & TORCH == set() and not {name.split(".")[0] for name in project} & {"datasets", "models"}
