"""The shape of the code: no import cycles in ``ftcp``, no ``sys.path`` edits or loading by file path anywhere,
no ``print`` progress in library modules, and the SSL engine imports only torch, numpy and tqdm (plus stdlib and
``ftcp`` itself).

The import graph is read with ``ast`` from every ``import`` in a module, inside functions too (a lazy import that
only dodged a cycle is still a cycle); imports under ``if TYPE_CHECKING:`` are not run and do not count, and an
import of a package's own parent package is implied by Python anyway.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ftcp"
CODE_DIRS = ("ftcp", "SSL_Training", "Evaluation_Scenarios", "benchmarks", "tests")
#: library modules whose command-line handlers may print their final result lines (progress goes to logging)
CLI_MODULES = {"ftcp.cli", "ftcp.errors", "ftcp.store", "ftcp.splitting", "ftcp.hub", "ftcp.embedding",
               "ftcp.pipeline", "ftcp.ssl.cli", "ftcp.evaluation.cli", "ftcp.evaluation.block_probe",
               "ftcp.evaluation.collect", "ftcp.demo_data"}
#: the modules that run on a training machine (torch + numpy + tqdm only)
GPU_SIDE = ("ftcp.ssl.engine", "ftcp.ssl.batches", "ftcp.ssl.export", "ftcp.ssl.steps", "ftcp.ssl.block",
            "ftcp.ssl.layers", "ftcp.ssl.losses", "ftcp.ssl.masking", "ftcp.ssl.metrics", "ftcp.ssl.data",
            "ftcp.ssl.config", "ftcp.ssl.blocks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything a module imports (modules, or ``package.attribute``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.update(f"{module}.{alias.name}" for alias in node.names)
            out.add(module)
    return out


def import_graph() -> dict[str, set[str]]:
    """{ftcp module: the ftcp modules it imports}."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            # `from pkg import mod` names the module; `from pkg import attr` names the package
            target = imported if imported in modules else imported.rpartition(".")[0]
            if target in modules and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_ftcp_import_graph_has_no_cycles():
    graph = import_graph()
    assert len(graph) > 40 and graph["ftcp.pipeline"]          # the graph was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_readers_never_import_writers_and_commands_sit_on_top():
    graph = import_graph()
    assert not graph["ftcp.dataset"] & {"ftcp.store", "ftcp.convert", "ftcp.splitting"}
    assert graph["ftcp.io_utils"] <= {"ftcp.errors"} and graph["ftcp.layout"] == set()
    importers_of_cli = [m for m, targets in graph.items() if "ftcp.cli" in targets]
    assert importers_of_cli == ["ftcp.__main__"]


def _code_files():
    for folder in CODE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_no_sys_path_edits_and_no_loading_by_file_path():
    offenders = []
    for path in _code_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8")
        for bad in ("sys.path.insert", "sys.path.append", "spec_from_file_location", "noqa: E402"):
            if bad in text:
                offenders.append(f"{path.relative_to(REPO)}: {bad}")
    assert offenders == []


def test_library_modules_log_instead_of_printing():
    """Library modules report progress through logging: ``print`` only in command-line handlers (their result
    lines), never a ``log=print`` callback, never ``SystemExit``."""
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                if name not in CLI_MODULES:
                    offenders.append(f"{name}:{node.lineno} print")
            elif isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load):
                parent_calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and c.func is node]
                if not parent_calls:
                    offenders.append(f"{name}:{node.lineno} print passed as a value")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                    offenders.append(f"{name}:{node.lineno} raise SystemExit")
    assert offenders == []


def test_the_training_side_imports_only_torch_numpy_and_tqdm():
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "tqdm", "ftcp", "SSL_Training"}
    modules = _modules()
    offenders = []
    for name in GPU_SIDE:
        for imported in _imports(name, modules[name]):
            top = imported.split(".")[0]
            if top and top not in allowed:
                offenders.append(f"{name}: {imported}")
    assert offenders == []
