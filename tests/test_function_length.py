"""study/ stays readable as a layer over Ray, MLflow and Optuna: no function in it runs over 40 lines."""

import ast
from pathlib import Path

STUDY = Path(__file__).resolve().parent.parent / "study"
LIMIT = 40


def test_no_function_in_study_is_longer_than_the_limit():
    long = []
    for path in sorted(STUDY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT:
                    long.append(f"{path.relative_to(STUDY.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"split these into named steps of at most {LIMIT} lines: " + "; ".join(long)
