"""The layout rules that `lint-imports` cannot express, checked on the source: AWS SDK imports and Redis key names
stay in the adapters, nothing imports in a circle, handlers stay thin. Each check has a negative control on a small
package written for the test, so a check that can no longer see a violation fails too."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "core" / "recloop"
ADAPTERS = "adapters"
KEY_MODULE = Path(ADAPTERS) / "redis.py"
SDK_MODULES = ("boto3", "botocore")
# A string that names a Redis key: a RecLoop global key, or a hash-tagged key ({u:<id>}:..., {olb}:..., ...).
REDIS_KEY = re.compile(r"^recloop:|\{[a-z]+(:[^{}]*)?\}:|^\{[a-z]+:$")
MAX_HANDLER_LINES = 12


def python_files(package: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(package.rglob("*.py")):
        yield path.relative_to(package), ast.parse(path.read_text(), filename=str(path))


def imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def sdk_imports_outside_adapters(package: Path) -> list[str]:
    return [
        f"{path}: {module}"
        for path, tree in python_files(package)
        if path.parts[0] != ADAPTERS
        for module in imported_modules(tree)
        if module.split(".")[0] in (*SDK_MODULES, "redis")
    ]


def redis_keys_outside_key_module(package: Path) -> list[str]:
    found = []
    for path, tree in python_files(package):
        if path == KEY_MODULE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and REDIS_KEY.search(node.value):
                found.append(f"{path}:{node.lineno}: {node.value!r}")
    return found


def import_cycles(*packages: str) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), function-level imports included, TYPE_CHECKING ones not."""
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in graph.modules:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def test_the_aws_sdk_and_redis_are_imported_only_by_the_adapters() -> None:
    assert sdk_imports_outside_adapters(PACKAGE) == []


def test_redis_keys_are_named_only_in_the_key_module() -> None:
    assert redis_keys_outside_key_module(PACKAGE) == []


def test_recloop_and_bench_have_no_import_cycles() -> None:
    assert import_cycles("recloop", "bench") == []


def test_function_handlers_are_a_few_lines_of_wiring() -> None:
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        code = [line for line in app.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        tree = ast.parse(app.read_text())
        assert len(code) <= MAX_HANDLER_LINES + 2, f"{app} has {len(code)} lines: its body belongs in recloop.handlers"
        for module in imported_modules(tree):
            assert module.startswith(("recloop.handlers", "recloop.core.settings")), f"{app} imports {module}"


@pytest.fixture
def bad_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package breaking every rule once: an SDK import and a key name outside adapters, and an import cycle."""
    package = tmp_path / "badpkg"
    (package / ADAPTERS).mkdir(parents=True)
    for init in (package / "__init__.py", package / ADAPTERS / "__init__.py"):
        init.write_text("")
    (package / ADAPTERS / "redis.py").write_text('import redis\nKEY = "recloop:ok-here"\n')
    (package / "store.py").write_text(
        'import boto3\n\n\ndef key(user):\n    return f"{{u:{user}}}:items"\n\n\nGLOBAL = "recloop:pop"\n'
    )
    (package / "a.py").write_text("def f():\n    from badpkg import b\n")
    (package / "b.py").write_text("from badpkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_negative_controls_see_each_kind_of_violation(bad_package: Path) -> None:
    assert sdk_imports_outside_adapters(bad_package) == ["store.py: boto3"]
    assert sorted(v.split(": ", 1)[1] for v in redis_keys_outside_key_module(bad_package)) == ["'recloop:pop'", "'{u:'"]
    assert import_cycles("badpkg") == [["badpkg.a", "badpkg.b"]]
