"""Fail when the import graph of a package has a cycle, type-only imports included.

    python3 scripts/check_imports.py [SRC_DIR [PACKAGE]]     (default: src openeas)

Reads every module of PACKAGE under SRC_DIR with `ast` (nothing is imported or run) and draws an
edge for every import of another module of the package, wherever it stands: at the top, under
`if TYPE_CHECKING:`, or inside a function. A type-only import is still a dependency a reader
has to follow, and the circles it closes are what make a package hard to read and to split;
a narrow `typing.Protocol` next to the code that needs it breaks them. The implicit import of a
parent package (`a.b.c` first imports `a.b`) is not an edge: every package that re-exports its
modules in `__init__` would be a circle otherwise.

Prints each circle (a strongly connected component, with one cycle through it) and exits 1
when there is one; exits 0 and says how many modules and edges it checked otherwise. Runs in
the lint step of scripts/test.sh.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path


def module_names(src: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `src`: dotted name -> file (`__init__.py` for a package)."""
    root = src / package
    if not root.is_dir():
        raise SystemExit(
            f"check_imports: no package folder {root}; give the source folder and the package name"
        )
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str | None, level: int, here: str, is_package: bool) -> str:
    """The absolute name of `from <level dots><module> import ...` written in module `here`."""
    if level == 0:
        return module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that module `name` imports (anywhere in its body)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, name, is_package)
            # `from pkg import mod` imports the module pkg.mod; `from mod import thing`, mod itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            # `import a.b.c` where only a.b is ours (c a name in it): the longest known prefix
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(src: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(src, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the first module of `component`, for the message."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[str]] = {start: [start]}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for child in sorted(edges[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    nxt.append(child)
        frontier = nxt
    return component


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "src"
    package = argv[1] if len(argv) > 1 else "openeas"
    edges = graph(src, package)
    found = cycles(edges)
    for component in found:
        print(f"import cycle among {len(component)} modules: " + " -> ".join(one_cycle(component, edges)))
        print("  modules in it: " + ", ".join(component))
    if found:
        print(
            f"{len(found)} import cycle(s) in {package}: break each with a narrow typing.Protocol "
            "in the module that needs it (or move the shared piece into its own module)."
        )
        return 1
    n_edges = sum(len(v) for v in edges.values())
    print(f"no import cycles in {package}: {len(edges)} modules, {n_edges} imports checked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
