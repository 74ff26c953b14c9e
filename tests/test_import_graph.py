"""The package's import graph: every module imports only its own layer or lower ones, at the top of the file, and
the optional heavy packages (and caloquant's modules built on them) only through ``caloquant._optional.require``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from caloquant._optional import EXTRAS

SRC = Path(__file__).resolve().parents[1] / "src" / "caloquant"

#: Dependency layers, lowest first: a module may import its own layer and the ones before it. The order is the
#: data flow where the flow and the dependencies agree; validate (stage 7) sits low because the tuner, the
#: precision guard and training judge with its metrics, and plotting draws validate's results for all of them;
#: quantize sits above runtime/generate because it builds the INT8 IRs they only load; calibrate tunes the
#: simulation with validate's features. cli is the top.
LAYERS = [
    {"", "_atomic", "_optional", "choices", "errors", "evaluation", "geometry", "machine", "ui"},
    {"data"},
    {"simulate"},
    {"models"},
    {"validate"},
    {"calibrate"},
    {"plotting"},
    {"train"},
    {"export"},
    {"runtime", "generate"},
    {"quantize"},
    {"cluster"},
    {"bench"},
    {"cli"},
]
#: Packages of the CLI import their library modules inside the commands, so that ``caloquant --help`` starts fast.
LAZY = ("caloquant.cli",)


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for k, layer in enumerate(LAYERS):
        if part in layer:
            return k
    raise AssertionError(f"{module}: its package {part!r} has no place in LAYERS; add it")


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


class _Imports(ast.NodeVisitor):
    """Top-level imports, type-only imports (under ``if TYPE_CHECKING:``), imports inside functions, and
    ``require("...")`` calls of one module."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.top: set[str] = set()
        self.typed: set[str] = set()
        self.nested: list[str] = []
        self.required: set[str] = set()
        self.depth = 0
        self.type_only = False

    def _add(self, names: list[str]) -> None:
        if self.depth:
            self.nested.extend(names)
        else:
            (self.typed if self.type_only else self.top).update(names)

    def visit_If(self, node: ast.If) -> None:
        if not _type_checking(node):
            self.generic_visit(node)
            return
        self.type_only, outer = True, self.type_only
        for child in node.body:
            self.visit(child)
        self.type_only = outer
        for child in node.orelse:
            self.visit(child)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        self._add([a.name for a in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
        self._add([base, *(f"{base}.{a.name}" for a in node.names)])

    def visit_Call(self, node: ast.Call) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id == "require" and node.args
                and isinstance(node.args[0], ast.Constant)):
            self.required.add(node.args[0].value)
        self.generic_visit(node)


def _graph() -> dict[str, _Imports]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _name(path)
        imports = _Imports(name, path.name == "__init__.py")
        imports.visit(ast.parse(path.read_text()))
        modules[name] = imports
    return modules


def _own(names: set[str] | list[str], modules: dict[str, _Imports]) -> set[str]:
    """The caloquant modules among imported names (``from pkg import name`` names a module or an attribute)."""
    return {n for n in names if n in modules}


def test_no_module_imports_a_higher_layer() -> None:
    """Type-only imports count too: they tie the modules together for mypy and for readers, and turn into runtime
    imports as soon as an annotation is evaluated (``typing.get_type_hints``, a dataclass field made concrete)."""
    modules = _graph()
    bad = sorted(f"{m} -> {t}" for m, imp in modules.items()
                 for t in _own(imp.top | imp.typed | imp.required, modules) if _layer(t) > _layer(m))
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_import_cycles_stay_inside_one_package() -> None:
    """With type-only imports counted, no import circle crosses packages (a package's ``__init__`` and its own
    modules may still import each other)."""
    modules = _graph()
    edges = {m: _own(imp.top | imp.typed | imp.required, modules) for m, imp in modules.items()}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check sees one
    crossing = [c for c in _cycles(edges) if len({m.split(".")[1] if "." in m else "" for m in c}) > 1]
    assert not crossing, "import cycles across packages:\n" + "\n".join(" ".join(c) for c in crossing)


def test_imports_sit_at_the_top_of_modules() -> None:
    nested = sorted(f"{m}: {n}" for m, imp in _graph().items() if not m.startswith(LAZY) for n in imp.nested)
    assert not nested, "imports inside functions (use a top-level import, or _optional.require):\n" + "\n".join(nested)


def test_optional_packages_load_only_through_require() -> None:
    modules = _graph()
    optional = set(EXTRAS)
    bound: set[str] = set()  # modules that import an optional package (or such a module) when imported
    while True:
        more = {m for m, imp in modules.items() if m not in bound
                and ({n.split(".")[0] for n in imp.top} & optional or _own(imp.top, modules) & bound)}
        if not more:
            break
        bound |= more
    leaks = sorted(f"{m} -> {t}" for m, imp in modules.items() if m not in bound and not m.startswith(LAZY)
                   for t in _own(imp.top, modules) & bound)
    assert not leaks, "optional-dependency modules imported without require:\n" + "\n".join(leaks)
    assert {"caloquant.models.gan3d", "caloquant.plotting.figures"} <= bound  # the check sees them


def test_specs_export_runtime_and_quantize_load_without_torch() -> None:
    code = ("import sys; import caloquant.models.spec, caloquant.export, caloquant.runtime, caloquant.quantize; "
            "print(sorted({'torch', 'matplotlib', 'nncf'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
