"""The shape of the code that docs/development.md draws: imports point down, scripts stay scripts, sizes stay small."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.stem for path in ROOT.glob("*.py"))
PACKAGES = {"utils": 1, "datasets": 2, "models": 2, "training": 3, "sweeps": 4}  # the floors of the house
GROUND = ("checks", "timing", "logger", "devices", "archives", "output_files", "checkpoint_safety", "bounded_files",
          "printable", "cpu_threads")
FLOORS = {**{f"utils.{name}": 1 for name in GROUND},
          "utils.config": 2, "utils.runs": 3, "utils.mlflow": 4, "utils.colab": 4}  # the floors inside utils/
TORCH_HELPERS = ("utils.checkpoint_safety", "utils.devices")  # ground-floor helpers whose job is a torch object
TORCH_AND_LIGHTNING = ("torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "timm", "kornia")
SOURCE_FOLDERS = (*PACKAGES, "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports at run time, also inside functions (relative imports resolved; type-checking-only
    ones left out), with each imported name as a possible submodule."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports at run time."""
    tops = set(SOURCE_FOLDERS) | set(SCRIPTS)
    return {name for name in imported_modules(path) if name.split(".")[0] in tops}


def floor_of(module: str) -> int | None:
    for prefix, floor in FLOORS.items():
        if module == prefix or module.startswith(prefix + "."):
            return floor
    return None


def package_of(module: str) -> str:
    return next((prefix for prefix in FLOORS if module == prefix or module.startswith(prefix + ".")), module)


def source_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_every_utils_module_has_a_floor():
    assert [module_name(path) for path in source_files("utils")
            if module_name(path) != "utils" and floor_of(module_name(path)) is None] == []


@pytest.mark.parametrize("path", source_files("utils"), ids=lambda path: module_name(path))
def test_utils_imports_point_down(path):
    own = module_name(path)
    if own == "utils":
        return
    for imported in project_imports(path):
        assert imported.split(".")[0] == "utils", f"{own} imports {imported}: utils/ is the ground floor of the house"
        if imported != "utils":
            floor = floor_of(imported)
            same_package = package_of(imported) == package_of(own)
            assert floor is not None and (floor < floor_of(own) or same_package), f"{own} imports {imported} (up or across)"


def test_utils_imports_no_torch_or_lightning():
    """Only a helper whose job is a torch object (TORCH_HELPERS) imports torch; the rest of utils/ is plain Python."""
    heavy = [f"{module_name(path)} imports {name}" for path in source_files("utils")
             if module_name(path) not in TORCH_HELPERS
             for name in sorted(imported_modules(path)) if name.split(".")[0] in TORCH_AND_LIGHTNING]
    assert heavy == []


def test_mlflow_code_lives_in_one_package_of_at_most_four_modules():
    """Only utils/mlflow/ imports mlflow (the rest of the house calls its functions), in at most 4 modules."""
    files = source_files(*SOURCE_FOLDERS) + sorted(ROOT.glob("*.py"))
    outside = [f"{module_name(path)} imports {name}" for path in files
               if not module_name(path).startswith("utils.mlflow")
               for name in sorted(imported_modules(path)) if name.split(".")[0] == "mlflow"]
    assert outside == []
    assert len([path for path in source_files("utils/mlflow") if path.name != "__init__.py"]) <= 4


@pytest.mark.parametrize("package", [name for name in PACKAGES if name != "utils"])
def test_packages_import_only_their_own_and_lower_floors(package):
    """datasets/ and models/ share a floor and never import each other; training/ stands on both, sweeps/ on it."""
    bad = []
    for path in source_files(package):
        for imported in project_imports(path):
            top = imported.split(".")[0]
            if top != package and (top not in PACKAGES or PACKAGES[top] >= PACKAGES[package]):
                bad.append(f"{module_name(path)} imports {imported}")
    assert bad == []


@pytest.mark.parametrize("folder", ["datasets", "models"])
def test_datasets_and_models_import_only_the_ground_floor_of_utils(folder):
    bad = [f"{module_name(path)} imports {imported}" for path in source_files(folder)
           for imported in project_imports(path)
           if imported.split(".")[0] == "utils" and imported != "utils" and floor_of(imported) != 1]
    assert bad == []


def test_no_script_is_imported_by_code_outside_the_tests():
    bad = [f"{module_name(path)} imports {imported}" for path in source_files(*SOURCE_FOLDERS) + sorted(ROOT.glob("*.py"))
           for imported in project_imports(path) if imported.split(".")[0] in SCRIPTS]
    assert bad == []


def test_no_sys_path_edits():
    files = source_files(*SOURCE_FOLDERS, "tests") + sorted(ROOT.glob("*.py")) + sorted(ROOT.rglob("*.ipynb"))
    edited = [str(path.relative_to(ROOT)) for path in files if path.name != "test_house.py"
              and any(edit in path.read_text(encoding="utf-8") for edit in ("sys.path.insert", "sys.path.append"))]
    assert edited == []


def test_modules_and_functions_stay_small():
    big = []
    for path in source_files(*SOURCE_FOLDERS) + sorted(ROOT.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            big.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:
                big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []
