"""The package's shape: no import cycle, no hidden imports, no channel names outside channels/.

An import cycle hidden by a function-local import is still a cycle: it only moves the
failure from import time to the first call. The `cli` package is the one exception: its lazy
imports keep `lmbatch --help` fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batch"
LAZY_IMPORTS_ALLOWED = {"batch.cli", "batch.cli.common", "batch.cli.send", "batch.cli.follow"}
CHANNEL_NAMES = ("email", "sms", "signature")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The batch modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "batch"]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    if base.split(".")[0] != "batch":
        return []
    # `from batch import errors` imports the module batch.errors, not just the package.
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph(
    modules: dict[str, Path],
) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Module-level edges between batch modules, and every function-local batch import."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local: list[tuple[str, int, str]] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        nested: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                for inner in ast.walk(fn):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        nested.add(id(inner))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = [t for t in _imported(node, module, is_package) if t in modules]
            if id(node) in nested:
                local += [(module, node.lineno, t) for t in targets]
            elif _type_checking_only(tree, node):
                continue
            else:
                edges[module].update(t for t in targets if t != module)
    return edges, local


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    for block in ast.walk(tree):
        if (
            isinstance(block, ast.If)
            and isinstance(block.test, ast.Name)
            and block.test.id == "TYPE_CHECKING"
            and any(node is inner for stmt in block.body for inner in ast.walk(stmt))
        ):
            return True
    return False


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    # A package's own __init__ importing its submodules is not a cycle with them: a
    # submodule importing a sibling (batch.channels.email → batch.channels.base) loads the
    # package first, which is what Python does anyway.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def _submodule_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges without a module's link to its own parent package (which Python loads first)."""
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in edges.items()}


def test_no_import_cycle_among_batch_modules() -> None:
    edges, _ = import_graph(_modules())
    assert find_cycle(_submodule_edges(edges)) is None


def test_no_function_local_import_of_a_batch_module_outside_cli() -> None:
    _, local = import_graph(_modules())
    hidden = [f"{m}:{line} imports {t}" for m, line, t in local if m not in LAZY_IMPORTS_ALLOWED]
    assert hidden == []


def test_the_checks_see_a_cycle_and_a_hidden_import(tmp_path: Path) -> None:
    """The checks above can fail: a two-module cycle and a lazy import are both reported."""
    pkg = tmp_path / "batch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from batch.b import x\n")
    (pkg / "b.py").write_text("from batch import a\nx = 1\n")
    (pkg / "c.py").write_text("def f():\n    from batch.a import x\n    return x\n")
    modules = {f"batch.{n}": pkg / f"{n}.py" for n in ("a", "b", "c")}
    edges, local = import_graph(modules)
    assert find_cycle(edges) in (
        ["batch.a", "batch.b", "batch.a"],
        ["batch.b", "batch.a", "batch.b"],
    )
    assert local == [("batch.c", 2, "batch.a")]


# -- channel names -------------------------------------------------------------------------

_COMPARING = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def _names_a_channel(node: ast.expr) -> bool:
    """A channel's name as a literal, or a literal container holding one."""
    if isinstance(node, ast.Constant):
        return node.value in CHANNEL_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_channel(e) for e in node.elts)
    return False


def channel_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, text) of each comparison with a channel's name: `==`, `!=`, `in`, `case`.

    Parsed, not grepped: `for field in ("name", "email")` iterates column names and
    `{"email": ...}` maps them; neither decides anything by a channel's name.
    """
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, _COMPARING) for op in node.ops):
            if any(_names_a_channel(e) for e in [node.left, *node.comparators]):
                found.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_a_channel(node.value):
            found.append(node.lineno)
    return [(n, lines[n - 1].strip()) for n in sorted(set(found))]


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ('spec.channel == "email"', True),
        ("channel != 'sms'", True),
        ('"signature" == kind', True),
        ('job.channel in ("email", "sms")', True),
        ('kind not in {"sms"}', True),
        ('match kind:\n    case "signature":\n        pass', True),
        ('CHANNELS = {"email": EMAIL}', False),
        ('name = "email"', False),
        ('row.get("email") == address', False),
        ('[f for f in ("name", "email", "phone")]', False),
    ],
)
def test_the_channel_name_check(code: str, found: bool) -> None:
    assert bool(channel_comparisons(code)) is found


def test_no_module_outside_channels_compares_a_channel_name() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "channels" not in path.relative_to(PACKAGE).parts
        for number, line in channel_comparisons(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_readme_module_map_names_every_module() -> None:
    """The README's map is the reader's way in: a module it does not name is a room not shown."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Module map")
    mapped = readme[start : readme.find("\n## ", start) if "\n## " in readme[start:] else None]
    missing = sorted(
        name
        for name in _modules()
        if not name.startswith("batch.sandbox.")
        and name not in {"batch", "batch.__main__"}
        and f"`{name.rsplit('.', 1)[-1]}`" not in mapped
        and f"`{name.rsplit('.', 1)[-1]}/`" not in mapped
    )
    assert missing == []


MAX_MODULE_LINES = 500  # issue 11: a module over this is doing two jobs


def test_no_module_is_over_500_lines() -> None:
    over = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert over == {}
