"""Check that fkd_ffcv's imports point down its layers, form no circle, and keep the option
modules torch-free (docs/architecture.md).

Every import of every module counts: module level and inside functions, absolute and relative,
and `importlib.import_module('<literal>')`. A module's layer is its subpackage (a module directly
in the package is a base module); it may import its own layer and those below it. Circles are
found among modules, across layers and inside one. The torch-free modules must not reach torch,
ffcv or numba through module-level imports (those inside functions run only when called; those
under `if TYPE_CHECKING:` never run).

Standard library only, so that it runs before anything is installed:
    python tools/check_imports.py [PACKAGE_DIR]     (default: fkd_ffcv next to this folder)
Exit 0 with a one-line summary, or 1 with one line per offence (file:line: what and why).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = ['base', 'data', 'records', 'loading', 'models', 'labeling', 'training', 'commands']
EXEMPT = {'moved'}  # names former modules as strings, for the import paths kept working
TORCH_FREE = ['training/*option*.py', 'config.py', 'defaults.py', 'errors.py', 'data/header.py',
              'records/label_types.py']
HEAVY = {'torch', 'torchvision', 'timm', 'ffcv', 'numba'}  # each loads torch or compiles


class Import:
    def __init__(self, target: str, line: int, text: str, module_level: bool):
        self.target, self.line, self.text, self.module_level = target, line, text, module_level


class Module:
    def __init__(self, name: str, path: Path, is_package: bool):
        self.name, self.path, self.is_package = name, path, is_package
        self.imports: list[Import] = []


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or \
        (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


class _Collector(ast.NodeVisitor):
    """The imports of one module, each marked module level or not (inside a function)."""

    def __init__(self, module: Module, known: set, source: str):
        self.module, self.known, self.source = module, known, source
        self.depth = 0  # functions entered
        self.skipped = 0  # `if TYPE_CHECKING:` blocks entered

    def _add(self, target: str, node: ast.AST) -> None:
        text = ast.get_source_segment(self.source, node) or target
        self.module.imports.append(Import(target, node.lineno, ' '.join(text.split()),
                                          self.depth == 0 and self.skipped == 0))

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.skipped += 1
            for child in node.body:
                self.visit(child)
            self.skipped -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ''
        if node.level:
            parts = self.module.name.split('.')
            keep = len(parts) - node.level + (1 if self.module.is_package else 0)
            base = '.'.join(parts[:keep] + ([base] if base else []))
        for alias in node.names:
            # `from package import submodule` imports the submodule; otherwise the name's module
            full = f'{base}.{alias.name}'
            self._add(full if full in self.known else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
        if name == 'import_module' and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, node)
        self.generic_visit(node)


def read_package(root: Path) -> dict:
    """Module name -> Module, with its imports, for every .py file under `root`."""
    package = root.name
    files = {}
    for path in sorted(root.rglob('*.py')):
        parts = list(path.relative_to(root).with_suffix('').parts)
        is_package = parts[-1] == '__init__'
        if is_package:
            parts = parts[:-1]
        files['.'.join([package] + parts)] = (path, is_package)
    modules = {name: Module(name, path, is_package) for name, (path, is_package) in files.items()}
    for module in modules.values():
        source = module.path.read_text()
        _Collector(module, set(modules), source).visit(ast.parse(source, str(module.path)))
    return modules


def own_target(target: str, modules: dict) -> str | None:
    """The package module an import reaches (the longest known prefix), or None if outside."""
    parts = target.split('.')
    for end in range(len(parts), 0, -1):
        name = '.'.join(parts[:end])
        if name in modules:
            return name
    return None


def layer_of(name: str, modules: dict) -> str:
    parts = name.split('.')
    if len(parts) == 1 or (len(parts) == 2 and not modules[name].is_package):
        return 'base'
    return parts[1]


def _exempt(module: Module, modules: dict) -> bool:
    return layer_of(module.name, modules) == 'base' and module.name.split('.')[-1] in EXEMPT


def _where(module: Module, line: int, root: Path) -> str:
    return f'{module.path.relative_to(root.parent)}:{line}'


def upward_imports(modules: dict, root: Path) -> list:
    problems = []
    for module in modules.values():
        here = layer_of(module.name, modules)
        if here not in LAYERS:
            problems.append(f'{_where(module, 1, root)}: {module.name} is in no layer ({here}); '
                            f'add its subpackage to LAYERS in tools/check_imports.py')
            continue
        if _exempt(module, modules):
            continue
        for imp in module.imports:
            target = own_target(imp.target, modules)
            there = target and layer_of(target, modules)
            if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                problems.append(f'{_where(module, imp.line, root)}: upward import `{imp.text}`: '
                                f'{here} may not import {there} ({target})')
    return problems


def _edges(modules: dict) -> dict:
    """module -> {imported module: first line}, package modules only, no self edges."""
    graph = {}
    for module in modules.values():
        if _exempt(module, modules):
            graph[module.name] = {}
            continue
        out = graph.setdefault(module.name, {})
        for imp in module.imports:
            target = own_target(imp.target, modules)
            if target and target != module.name:
                out.setdefault(target, imp.line)
    return graph


def _components(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(set(component))
    return found


def _path(graph: dict, start: str, goal: str, within: set) -> list:
    """Shortest import path start -> ... -> goal inside `within` (breadth first)."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child in within and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
        if goal in previous:
            break
    path, node = [], goal
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def circles(modules: dict, root: Path) -> list:
    """One line per circle: for each import inside a strongly connected set, the shortest circle
    through it, each circle once."""
    graph, problems, seen = _edges(modules), [], set()
    for component in _components(graph):
        for source in sorted(component):
            for target in sorted(set(graph[source]) & component):
                cycle = [source] + _path(graph, target, source, component)
                turn = cycle.index(min(cycle[:-1]))
                key = tuple(cycle[turn:-1] + cycle[:turn])
                if key in seen:
                    continue
                seen.add(key)
                where = ', '.join(_where(modules[a], graph[a][b], root)
                                  for a, b in zip(cycle, cycle[1:]))
                problems.append(f'{_where(modules[source], graph[source][target], root)}: import '
                                f'circle: {" -> ".join(cycle)} (imports at {where})')
    return problems


def torch_free_problems(modules: dict, root: Path) -> list:
    """A torch-free module that reaches a HEAVY import through module-level imports."""
    problems, names = [], []
    for pattern in TORCH_FREE:
        matched = sorted(root.glob(pattern))
        if not matched:
            problems.append(f'{root.name}/{pattern}: listed as torch-free in '
                            f'tools/check_imports.py, but no such module')
        for path in matched:
            parts = list(path.relative_to(root).with_suffix('').parts)
            names.append('.'.join([root.name] + parts))
    for name in names:
        chain = _heavy_chain(modules, name)
        if chain:
            steps = ' -> '.join(mod for mod, _ in chain)
            where = ', '.join(_where(modules[mod], line, root) if line else f'{mod} (package)'
                              for mod, line in chain[:-1])
            problems.append(f'{_where(modules[name], chain[0][1] or 1, root)}: torch-free module '
                            f'{name} imports {chain[-1][0]} at module level: {steps} '
                            f'(imports at {where})')
    return problems


def _parents(name: str, modules: dict) -> list:
    """The packages whose __init__ runs before `name` (importing a.b.c runs a and a.b)."""
    parts = name.split('.')
    return [p for p in ('.'.join(parts[:end]) for end in range(1, len(parts))) if p in modules]


def _heavy_chain(modules: dict, start: str) -> list:
    """[(module, line of the next import)..., (heavy import, 0)], breadth first, or []."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for name in frontier:
            steps = [(parent, 0) for parent in _parents(name, modules)]
            steps += [(imp.target, imp.line) for imp in modules[name].imports if imp.module_level]
            for target, line in steps:
                if target.split('.')[0] in HEAVY:
                    chain, node = [(target, 0)], (name, line)
                    while node is not None:
                        chain.append(node)
                        node = previous[node[0]]
                    return chain[::-1]
                own = own_target(target, modules)
                if own and own not in previous:
                    previous[own] = (name, line)
                    following.append(own)
        frontier = following
    return []


def main(argv: list) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / 'fkd_ffcv'
    root = root.resolve()
    if not (root / '__init__.py').is_file():
        print(f'check_imports: {root} is not a package (no __init__.py); give the package folder')
        return 2
    modules = read_package(root)
    problems = upward_imports(modules, root) + circles(modules, root) + \
        torch_free_problems(modules, root)
    for problem in problems:
        print(problem)
    if problems:
        print(f'check_imports: {len(problems)} problem(s) in {root.name}/ '
              f'(layers, bottom to top: {" -> ".join(LAYERS)}; docs/architecture.md)')
        return 1
    count = sum(len(m.imports) for m in modules.values())
    print(f'check_imports: OK, {len(modules)} modules of {root.name}/, {count} imports: all point '
          f'down {" -> ".join(LAYERS)}, no circle, {len(TORCH_FREE)} torch-free patterns clean')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
