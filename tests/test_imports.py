"""Imports flow one way: no module of study/ or reidmodel/ imports, even inside a function, one that imports it
back, and the method library imports none of the orchestration."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("reidmodel", "study")
ORCHESTRATION = ("study", "ray", "mlflow", "optuna")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = REPO) -> set[str]:
    """Every module the file names in an import statement anywhere in it (functions and TYPE_CHECKING included);
    ``from pkg import name`` names ``pkg.name`` too, which counts when it is a module."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.Module([node for node in ast.parse(path.read_text(), str(path)).body
                                     if not _runs_as_program(node)], [])):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _runs_as_program(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``: runs only when the file is the program, a module of its own that nothing
    imports back, so its imports close no circle."""
    return isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    files = {module_name(path, root): path for package in PACKAGES for path in (root / package).rglob("*.py")}
    return {name: {target for target in imported(path, root) if target in files and target != name}
            for name, path in files.items()}


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "a.py").write_text("def f():\n    from study import b\n")
    (tmp_path / "study" / "b.py").write_text("from .a import f\n")
    assert import_graph(tmp_path) == {"study.a": {"study.b"}, "study.b": {"study.a"}}
    with pytest.raises(CycleError):
        TopologicalSorter(import_graph(tmp_path)).prepare()


def test_no_import_circles():
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}: move the shared part to a module both import")


def test_the_method_library_imports_no_orchestration():
    for path in (REPO / "reidmodel").rglob("*.py"):
        offending = sorted(name for name in imported(path) if name.split(".")[0] in ORCHESTRATION)
        assert not offending, f"{path.relative_to(REPO)} imports {offending}: reidmodel must stay a plain library"
