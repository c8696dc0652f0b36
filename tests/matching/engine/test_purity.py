"""The engine is pure: stdlib + sortedcontainers only, no clock, no randomness, no float."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "matching" / "engine"
REPO = ENGINE.parents[1]
ALLOWED_THIRD_PARTY = {"sortedcontainers", "matching"}
FORBIDDEN = {"django", "redis", "celery", "channels", "kafka", "psycopg", "psycopg2", "rest_framework"}


def test_importing_the_engine_loads_only_stdlib_and_sortedcontainers():
    """Import matching.engine in a fresh interpreter and inspect sys.modules:
    every top-level module loaded is from the standard library,
    sortedcontainers or matching itself; none of Django, Redis, Celery,
    Channels, Kafka or PostgreSQL drivers."""
    code = "import sys, json; import matching.engine; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    top_level = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert not top_level & FORBIDDEN
    outsiders = {
        name for name in top_level
        if name not in sys.stdlib_module_names and name not in ALLOWED_THIRD_PARTY and not name.startswith("_")
    }
    assert outsiders == set()


def engine_sources():
    files = sorted(ENGINE.glob("*.py"))
    assert files
    return [(path.name, ast.parse(path.read_text(), filename=str(path))) for path in files]


def test_engine_source_imports_no_clock_randomness_or_outside_packages():
    """Statically: engine modules import only stdlib (minus time, datetime,
    random, secrets, uuid: no clock, no randomness), sortedcontainers and
    themselves."""
    no_go = {"time", "datetime", "random", "secrets", "uuid", "os", "threading"}
    for name, tree in engine_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: the engine itself
                    continue
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root not in no_go, f"{name} imports {root}"
                assert root in sys.stdlib_module_names or root == "sortedcontainers", f"{name} imports {root}"


def test_engine_source_has_no_float_arithmetic():
    """Statically: no float literal, no true division, no float() call in
    the engine: prices, quantities and notional stay integers."""
    for name, tree in engine_sources():
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Constant) and type(node.value) is float), f"float literal in {name}"
            assert not (isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Div)), (
                f"true division in {name} line {node.lineno}"
            )
            assert not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "float"), f"float() in {name}"
