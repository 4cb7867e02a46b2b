"""Structure of the package's source: files, lines, the longest functions, imports inside functions, and
circles between modules (issue 26's yardsticks). `python scripts/code_stats.py [--json]`; the checks live in
tests/test_structure.py."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "talking_heads"
PACKAGE = "talking_heads"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names an ImportFrom refers to (the module and, for `from . import x`, the submodules)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.depth = 0  # inside a function
        self.type_only = 0
        self.imports: list[tuple[list[str], bool]] = []  # (names, inside a function)
        self.functions: list[tuple[int, str, int]] = []  # (lines, qualified name, first line)
        self.stack: list[str] = []

    def _func(self, node):
        self.functions.append((node.end_lineno - node.lineno + 1, ".".join(self.stack + [node.name]), node.lineno))
        self.stack.append(node.name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _func

    def visit_ClassDef(self, node):
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def visit_If(self, node):
        if _is_type_checking(node):
            self.type_only += 1
            self.generic_visit(node)
            self.type_only -= 1
        else:
            self.generic_visit(node)

    def visit_Import(self, node):
        if not self.type_only:
            self.imports.append(([a.name for a in node.names], self.depth > 0))

    def visit_ImportFrom(self, node):
        if not self.type_only:
            self.imports.append((_resolve(self.module, self.is_package, node), self.depth > 0))


def analyse(root: Path = ROOT) -> dict:
    """Sizes, functions (lines, name, first line), import counts and the import graph of the package at `root`.
    Imports under `if TYPE_CHECKING:` are not edges; lazy imports inside functions are (a circle is a circle)."""
    files = sorted(p for p in root.rglob("*.py"))
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {}
    functions, lines, inner, total_imports = [], {}, 0, 0
    for name, path in modules.items():
        text = path.read_text()
        lines[name] = len(text.splitlines())
        v = _Visitor(name, path.name == "__init__.py")
        v.visit(ast.parse(text))
        functions += [(n, f"{name}.{q}", first) for n, q, first in v.functions]
        edges = set()
        for names, in_function in v.imports:
            ours = [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
            total_imports += 1
            inner += in_function
            for n in ours:
                if n in modules and n != name:
                    edges.add(n)
        graph[name] = edges
    return {"files": len(files), "lines": sum(lines.values()), "module_lines": lines, "functions": functions,
            "imports": total_imports, "imports_in_functions": inner, "graph": graph, "cycles": cycles(graph)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    s = analyse()
    long_fns = sorted(s["functions"], reverse=True)
    big = sorted(((n, m) for m, n in s["module_lines"].items()), reverse=True)
    if args.json:
        print(json.dumps({k: v for k, v in s.items() if k != "graph"}, default=list, indent=1))
        return 0
    print(f"files {s['files']}, lines {s['lines']}")
    print(f"imports {s['imports']}, inside functions {s['imports_in_functions']} "
          f"({100 * s['imports_in_functions'] / max(1, s['imports']):.0f} %)")
    print(f"functions over 60 lines: {sum(n > 60 for n, _, _ in long_fns)}")
    for n, q, _ in long_fns[:args.top]:
        print(f"  {n:4d}  {q}")
    print(f"modules over 500 lines: {sum(n > 500 for n, _ in big)}")
    for n, m in big[:args.top]:
        print(f"  {n:4d}  {m}")
    print(f"circles: {len(s['cycles'])}")
    for c in s["cycles"]:
        print("  " + " <-> ".join(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
