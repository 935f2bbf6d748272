"""The shape of the code: imports without cycles, layers that point one way,
the simulator kept apart, and modules and functions small enough to read.

The source files are read and parsed with ast, never imported, so these run
without a database and in well under a second. Each check lists every
offender (file:line, or the cycle's path) so that one run says all there is
to fix. The self-tests at the end feed the same functions small synthetic
inputs, which proves the checks can fail and pins down how imports resolve.
"""

import ast
import functools
import os
from collections import deque
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The helpdesk itself: what is deployed and what the rules below hold to.
APPLICATION_PACKAGES = ("conversations", "accounts", "helpdesk")

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80

# Modules allowed past MAX_MODULE_LINES, and why.
SIZE_EXEMPT_NAMES = {
    # One per app by Django's convention; fields carry their why-comments.
    "models.py",
    "admin.py",
}
SIZE_EXEMPT_PATHS = {
    # Meta's JSON is read in exactly one file (house rule 8).
    "conversations/whatsapp/payloads.py",
}

# Top-level directories whose code may import the sandbox (see
# test_only_tests_and_benchmarks_import_the_sandbox for why bench/ is here).
SANDBOX_USERS = ("sandbox", "tests", "bench")

# Directories under ROOT that hold no code of the project's own.
NOT_SOURCE = {"var", "venv", "build", "dist", "node_modules", "__pycache__"}


class LayerRule(NamedTuple):
    """Modules under `importer` never import anything under `forbidden`.

    Both are module prefixes: "conversations.services" means that module or
    package and everything below it. A rule whose importer does not exist yet
    has nothing to check and passes."""

    importer: str
    forbidden: str
    why: str


_SERVICES_ARE_CALLED = (
    "services are what views, the API, consumers and the admin call; "
    "a service importing its caller points the layers the wrong way"
)
LAYER_RULES = (
    LayerRule("conversations.services", "conversations.views", _SERVICES_ARE_CALLED),
    LayerRule("conversations.services", "conversations.web", _SERVICES_ARE_CALLED),
    LayerRule("conversations.services", "conversations.api", _SERVICES_ARE_CALLED),
    LayerRule(
        "conversations.services", "conversations.consumers", _SERVICES_ARE_CALLED
    ),
    LayerRule(
        "conversations.services",
        "conversations.live.consumers",
        _SERVICES_ARE_CALLED,
    ),
    LayerRule("conversations.services", "conversations.admin", _SERVICES_ARE_CALLED),
    LayerRule(
        "conversations.selectors",
        "conversations.services",
        "selectors only read; the services they would call write",
    ),
)


def fail(message: str) -> None:
    """Fail with the message alone: the list of offenders is the whole story,
    the test's source and a repr of the list would only bury it."""
    pytest.fail(message, pytrace=False)


# Reading the source tree -------------------------------------------------------


@dataclass(frozen=True)
class SourceModule:
    name: str  # "conversations.services"
    path: str  # "conversations/services.py", relative to ROOT
    is_package: bool  # an __init__.py
    tree: ast.Module
    lines: int

    @functools.cached_property
    def imports(self) -> list["Import"]:
        return imports_in(self.tree, self.name, is_package=self.is_package)


def module_name(relative: Path) -> tuple[str, bool]:
    """The dotted name of a file under ROOT, and whether it is a package."""
    parts = list(relative.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


@functools.cache
def read_module(path: Path) -> SourceModule:
    relative = path.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    name, is_package = module_name(relative)
    return SourceModule(
        name=name,
        path=relative.as_posix(),
        is_package=is_package,
        tree=ast.parse(text, filename=str(relative)),
        lines=len(text.splitlines()),
    )


def python_files(top: Path) -> list[Path]:
    """Every .py file under top, leaving out hidden directories (.venv, .git)
    and the ones in NOT_SOURCE."""
    found = []
    for directory, subdirectories, files in os.walk(top):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not name.startswith(".")
            and name not in NOT_SOURCE
            and not name.endswith(".egg-info")
        )
        found.extend(Path(directory, name) for name in sorted(files))
    return [path for path in found if path.suffix == ".py"]


@functools.cache
def application_modules() -> dict[str, SourceModule]:
    """The modules of APPLICATION_PACKAGES by dotted name, migrations left out
    (Django loads them by name; they are generated, and long by nature)."""
    modules = {}
    for package in APPLICATION_PACKAGES:
        for path in python_files(ROOT / package):
            if "migrations" in path.relative_to(ROOT).parts:
                continue
            module = read_module(path)
            modules[module.name] = module
    return modules


# Imports ----------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported name, made absolute.

    `name` is what the statement names: `from .models import Message` in
    conversations.services gives "conversations.models.Message", and
    `import conversations.tasks` gives "conversations.tasks". Whether the last
    part is a module or a name defined in one is settled by resolve()."""

    name: str
    line: int
    in_function: bool


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_module_argument(call: ast.Call) -> str | None:
    """The module named by importlib.import_module("x") or __import__("x")."""
    function = call.func
    if isinstance(function, ast.Attribute):
        called = function.attr
    elif isinstance(function, ast.Name):
        called = function.id
    else:
        return None
    if called not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value if not first.value.startswith(".") else None
    return None


def relative_base(module: str, is_package: bool, level: int, name: str | None):
    """The absolute module a `from <dots><name> import ...` statement reads
    from, or None when the dots climb above the top-level package."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(package):
        return None
    parts = package[: len(package) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module = module
        self.is_package = is_package
        self.function_depth = 0
        self.found: list[Import] = []

    def add(self, name: str, line: int) -> None:
        self.found.append(Import(name, line, self.function_depth > 0))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        # Only read by type checkers: never runs, so never a cycle.
        for statement in node.orelse:
            self.visit(statement)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module
        if node.level:
            base = relative_base(self.module, self.is_package, node.level, base)
        if base is None:
            return
        for alias in node.names:
            self.add(base if alias.name == "*" else f"{base}.{alias.name}", node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        named = _import_module_argument(node)
        if named:
            self.add(named, node.lineno)
        self.generic_visit(node)


def imports_in(tree: ast.AST, module: str, *, is_package: bool = False):
    """Every import in a parsed module: at module level and inside functions,
    in try/except too, but not under `if TYPE_CHECKING:`."""
    collector = _ImportCollector(module, is_package)
    collector.visit(tree)
    return collector.found


def resolve(name: str, known: Set[str]) -> str | None:
    """The module an imported name loads: the longest of its dotted prefixes
    that is a known module. "conversations.models.Message" resolves to
    "conversations.models"; "conversations.delivery" (from `from . import
    delivery`) to the submodule when there is one, else to the package that
    defines the name. None when the name is outside the known modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def parents(module: str) -> list[str]:
    """The packages above a module, outermost first."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


@dataclass(frozen=True)
class Edge:
    importer: str
    target: str
    path: str
    line: int
    in_function: bool
    # Set when the edge is a package whose __init__ runs first because a
    # module inside it was imported.
    via: str | None = None

    def describe(self) -> str:
        where = f"{self.path}:{self.line}"
        text = f"{where}  {self.importer} -> {self.target}"
        if self.via:
            text += f" (importing {self.via} runs its package first)"
        if self.in_function:
            text += " [inside a function]"
        return text


def edges_of(module: str, path: str, imports: Iterable[Import], known: Set[str]):
    """The import graph's edges out of one module.

    An import is an edge to the module it resolves to. Importing a module
    also runs each package above it first, so it is an edge to those packages
    too, except the packages above the importer itself: they began running
    before the importer did, so importing through them starts nothing new.
    """
    above_importer = set(parents(module)) | {module}
    edges = []
    for imported in imports:
        target = resolve(imported.name, known)
        if target is None:
            continue
        edges.append(Edge(module, target, path, imported.line, imported.in_function))
        for package in parents(target):
            if package in known and package not in above_importer:
                edges.append(
                    Edge(
                        module,
                        package,
                        path,
                        imported.line,
                        imported.in_function,
                        via=target,
                    )
                )
    # `from .models import A, B` is one import of one module, listed once.
    return list(dict.fromkeys(edges))


@functools.cache
def application_edges() -> tuple[Edge, ...]:
    modules = application_modules()
    known = set(modules)
    edges = []
    for module in modules.values():
        edges.extend(edges_of(module.name, module.path, module.imports, known))
    return tuple(edges)


# Cycles ------------------------------------------------------------------------


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted, in the order the
    algorithm closes them. Recursive: the depth is bounded by the number of
    modules, a few hundred at most."""
    successors = {node: sorted(set(targets)) for node, targets in graph.items()}
    for targets in list(successors.values()):
        for target in targets:
            successors.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in successors[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(successors):
        if node not in index:
            visit(node)
    return components


def cyclic_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The components that hold a cycle: more than one module, or a module
    that imports itself. Sorted by their first module."""
    return sorted(
        component
        for component in strongly_connected(graph)
        if len(component) > 1 or component[0] in graph.get(component[0], ())
    )


def _shortest_path(graph, start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return path[::-1]
        for target in sorted(graph.get(node, ())):
            if target in within and target not in previous:
                previous[target] = node
                queue.append(target)
    raise AssertionError(f"{goal} is not reachable from {start} within {within}")


def _rotated(cycle: list[str]) -> list[str]:
    """The same cycle starting from its smallest module, so each is listed once."""
    ring = cycle[:-1]
    start = ring.index(min(ring))
    ring = ring[start:] + ring[:start]
    return [*ring, ring[0]]


def cycles_in(graph: Mapping[str, Iterable[str]], component: list[str]):
    """The shortest cycle through each import inside a component, each once,
    shortest first: together they show every import that holds it together,
    as ["a", "b", "a"] for a -> b -> a."""
    within = set(component)
    cycles = []
    for source in sorted(within):
        for target in sorted(set(graph.get(source, ())) & within):
            back = _shortest_path(graph, target, source, within)
            cycle = _rotated([source, *back])
            if cycle not in cycles:
                cycles.append(cycle)
    return sorted(cycles, key=lambda cycle: (len(cycle), cycle))


def graph_of(edges: Iterable[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
    return graph


def test_application_imports_have_no_cycle():
    """No module of the helpdesk imports itself through others.

    How edges are counted:
    - Every import statement counts, at module level and inside functions and
      methods (and in try/except). An import moved into a function to dodge a
      cycle only defers it to the first call: the two modules still need each
      other, and which one loads first decides whether it works.
    - Imports under `if TYPE_CHECKING:` do not count: they never run.
    - `from X import n` is an edge to X.n when X.n is a module of the tree,
      otherwise to X, where n is defined (a package's __init__). Relative
      imports resolve the same way from the importer's package.
    - Importing a module runs each package above it first, so it is an edge to
      those packages' __init__ as well: conversations.tasks importing
      conversations.services.inbound depends on conversations/services/
      __init__.py, which imports every area module. The packages above the
      importer itself are not counted, since they started before it did;
      counting them would make every re-exporting __init__ a cycle with its
      own submodules. An explicit `from conversations.services import name`
      inside that package is counted: it reads a name the __init__ may not
      have bound yet.
    - The graph holds conversations, accounts and helpdesk (migrations left
      out), so a cycle that leaves conversations and comes back is seen.
    """
    edges = application_edges()
    graph = graph_of(edges)
    components = cyclic_components(graph)
    report = []
    for component in components:
        members = set(component)
        report.append(f"\n{len(component)} modules: {', '.join(component)}")
        report.append("  cycles (the shortest through each import):")
        report.extend(
            "    " + " -> ".join(cycle) for cycle in cycles_in(graph, component)
        )
        report.append("  the imports inside it:")
        report.extend(
            "    " + edge.describe()
            for edge in sorted(edges, key=lambda edge: (edge.path, edge.line))
            if edge.importer in members and edge.target in members
        )
    if components:
        fail(
            f"{len(components)} group(s) of modules import one another. Break each "
            "cycle at one import: move what both need into a module below them "
            "both, or turn the dependency around (the lower module calls nothing "
            "above it). Moving an import into a function does not break a cycle: "
            "those are counted too.\n" + "\n".join(report)
        )


# Layers ------------------------------------------------------------------------


def layer_violations(
    imports_by_module: Mapping[tuple[str, str], Iterable[Import]],
    rules: Iterable[LayerRule],
) -> list[str]:
    """Every import that breaks a rule, as "path:line  importer imports name:
    why"; imports_by_module is keyed by (module name, path)."""
    found = []
    for rule in rules:
        for (module, path), imports in sorted(imports_by_module.items()):
            if not is_under(module, rule.importer):
                continue
            for imported in imports:
                if is_under(imported.name, rule.forbidden):
                    place = " [inside a function]" if imported.in_function else ""
                    found.append(
                        f"{path}:{imported.line}  {module} imports "
                        f"{imported.name}{place}: {rule.why}"
                    )
    return found


def test_layers_point_one_way():
    """Services never import what calls them (views, web, API, consumers,
    admin); selectors never import services. The rules are LAYER_RULES."""
    imports_by_module = {
        (module.name, module.path): module.imports
        for module in application_modules().values()
    }
    violations = layer_violations(imports_by_module, LAYER_RULES)
    if violations:
        fail(
            f"{len(violations)} import(s) point against the layers. Move the shared "
            "piece down into the lower layer, or let the caller pass in what the "
            "lower layer needs:\n  " + "\n  ".join(violations)
        )


# The sandbox --------------------------------------------------------------------


def sandbox_imports(module: SourceModule) -> list[str]:
    return [
        f"{module.path}:{imported.line}  imports {imported.name}"
        for imported in module.imports
        if is_under(imported.name, "sandbox")
    ]


def test_only_tests_and_benchmarks_import_the_sandbox():
    """Nothing outside sandbox/, tests/ and bench/ imports the sandbox.

    The sandbox simulates Meta's side of the Cloud API. The helpdesk
    (helpdesk/, accounts/, conversations/, manage.py) must run against the
    real Meta with no sandbox code loaded, and must not learn the simulator's
    habits, so it never imports it.

    bench/ is allowed, as tests/ is: its scripts play Meta's side too
    (bench/outbound_delivery.py and bench/notifications.py start the
    simulator as the Cloud API and drive the helpdesk against it). They are
    harnesses run by hand; they are not installed with the project (pyproject
    packages only helpdesk, accounts, conversations and sandbox) and nothing in
    the helpdesk imports them, so their use of the sandbox cannot reach a
    deployment.

    helpdesk/launcher.py starts the sandbox as a process of its own (`python
    -m sandbox`) when no Graph API URL is set. That is a process boundary, as
    with the real Meta, not an import, and this check allows it.
    """
    offenders = []
    for path in python_files(ROOT):
        if path.relative_to(ROOT).parts[0] in SANDBOX_USERS:
            continue
        # Only a file that names the sandbox can import it; this skips
        # parsing the rest (the migrations among them).
        if "sandbox" not in path.read_text(encoding="utf-8"):
            continue
        offenders.extend(sandbox_imports(read_module(path)))
    if offenders:
        fail(
            "The sandbox is imported from outside sandbox/, tests/ and bench/. Talk "
            "to it over HTTP through WHATSAPP_GRAPH_API_URL, as to Meta, or move "
            "the code into tests/:\n  " + "\n  ".join(offenders)
        )


# Sizes --------------------------------------------------------------------------


def test_modules_stay_under_800_lines():
    """No module of conversations/, accounts/ or helpdesk/ (migrations left
    out) is over 800 lines, except models.py, admin.py and
    conversations/whatsapp/payloads.py (SIZE_EXEMPT_*)."""
    too_long = [
        f"{module.path}: {module.lines} lines ({module.lines - MAX_MODULE_LINES} over)"
        for module in sorted(application_modules().values(), key=lambda m: m.path)
        if module.lines > MAX_MODULE_LINES
        and Path(module.path).name not in SIZE_EXEMPT_NAMES
        and module.path not in SIZE_EXEMPT_PATHS
    ]
    if too_long:
        fail(
            f"{len(too_long)} module(s) over {MAX_MODULE_LINES} lines. Split each by "
            "area into a package, one module per area, re-exported from its "
            "__init__ so callers keep their imports (house rule 1):\n  "
            + "\n  ".join(too_long)
        )


def function_lengths(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line of the def, qualified name, length) of every function and method,
    nested ones included. The length runs from the def line to the last line,
    so decorators are not counted."""
    found = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = ".".join([*scope, child.name])
                found.append((child.lineno, name, child.end_lineno - child.lineno + 1))
                visit(child, (*scope, child.name))
            elif isinstance(child, ast.ClassDef):
                visit(child, (*scope, child.name))
            else:
                visit(child, scope)

    visit(tree, ())
    return found


def test_functions_stay_under_80_lines():
    """No function or method of conversations/, accounts/ or helpdesk/
    (migrations left out) is over 80 lines, from its def line to its last."""
    too_long = [
        f"{module.path}:{line}  {name}: {length} lines"
        for module in sorted(application_modules().values(), key=lambda m: m.path)
        for line, name, length in function_lengths(module.tree)
        if length > MAX_FUNCTION_LINES
    ]
    if too_long:
        fail(
            f"{len(too_long)} function(s) over {MAX_FUNCTION_LINES} lines. Give each "
            "step a function of its own, named for what it does:\n  "
            + "\n  ".join(too_long)
        )


# The checks themselves -----------------------------------------------------------


def parsed(*lines: str) -> ast.Module:
    return ast.parse("\n".join(lines))


KNOWN = {
    "conversations",
    "conversations.models",
    "conversations.tasks",
    "conversations.delivery",
    "conversations.services",
    "conversations.services.inbound",
    "conversations.services.statuses",
    "accounts",
    "accounts.models",
}


def resolved_targets(tree: ast.Module, module: str, *, is_package=False):
    imports = imports_in(tree, module, is_package=is_package)
    return [
        (edge.target, edge.via)
        for edge in edges_of(module, "x.py", imports, KNOWN | {module})
    ]


def test_relative_imports_resolve_to_the_submodule_else_the_package():
    tree = parsed(
        "from . import delivery, services",
        "from . import some_function",
        "from .models import Message",
        "from .services import inbound, send_reply",
        "from accounts.models import User",
        "import django.db",
    )
    assert resolved_targets(tree, "conversations.tasks") == [
        ("conversations.delivery", None),
        ("conversations.services", None),
        ("conversations", None),
        ("conversations.models", None),
        ("conversations.services.inbound", None),
        ("conversations.services", "conversations.services.inbound"),
        ("conversations.services", None),
        ("accounts.models", None),
        ("accounts", "accounts.models"),
    ]


def test_imports_from_a_package_climb_with_their_dots():
    tree = parsed(
        "from .. import tasks",
        "from ..models import Conversation",
        "from . import statuses",
        "from .statuses import record",
        "from conversations.services import send_reply",
    )
    assert resolved_targets(tree, "conversations.services.inbound") == [
        ("conversations.tasks", None),
        ("conversations.models", None),
        ("conversations.services.statuses", None),
        ("conversations.services.statuses", None),
        # A name read from its own package's __init__: a real edge.
        ("conversations.services", None),
    ]
    init = parsed("from . import inbound", "from .statuses import *")
    assert resolved_targets(init, "conversations.services", is_package=True) == [
        ("conversations.services.inbound", None),
        ("conversations.services.statuses", None),
    ]


def test_importing_a_submodule_runs_its_package_first():
    tree = parsed("from conversations.services.inbound import receive")
    assert resolved_targets(tree, "conversations.tasks") == [
        ("conversations.services.inbound", None),
        ("conversations.services", "conversations.services.inbound"),
    ]


def test_local_imports_count_and_type_checking_imports_do_not():
    tree = parsed(
        "from typing import TYPE_CHECKING",
        "if TYPE_CHECKING:",
        "    from . import delivery",
        "else:",
        "    from . import models",
        "def deliver():",
        "    from . import tasks",
        "    importlib.import_module('conversations.services')",
    )
    imports = imports_in(tree, "conversations.services.inbound")
    assert [(i.name, i.line, i.in_function) for i in imports] == [
        ("typing.TYPE_CHECKING", 1, False),
        ("conversations.services.models", 5, False),
        ("conversations.services.tasks", 7, True),
        ("conversations.services", 8, True),
    ]


def test_the_cycle_finder_finds_cycles_and_only_them():
    assert cyclic_components({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert cycles_in({"a": {"b"}, "b": {"a"}}, ["a", "b"]) == [["a", "b", "a"]]

    graph = {"d": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a", "e"}, "e": set()}
    assert cyclic_components(graph) == [["a", "b", "c"]]
    assert cycles_in(graph, ["a", "b", "c"]) == [["a", "b", "c", "a"]]

    assert cyclic_components({"a": {"a"}, "b": {"a"}}) == [["a"]]
    assert cycles_in({"a": {"a"}}, ["a"]) == [["a", "a"]]
    assert cyclic_components({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_layer_rules_flag_an_import_against_them():
    rules = [LayerRule("conversations.services", "conversations.views", "why")]
    imports = {
        ("conversations.services.inbound", "conversations/services/inbound.py"): [
            Import("conversations.views.inbox", 3, True),
            Import("conversations.viewsets", 4, False),
        ],
        ("conversations.views", "conversations/views.py"): [
            Import("conversations.services.send_reply", 1, False),
        ],
    }
    assert layer_violations(imports, rules) == [
        "conversations/services/inbound.py:3  conversations.services.inbound "
        "imports conversations.views.inbox [inside a function]: why"
    ]


def test_a_function_is_measured_from_its_def_line():
    tree = parsed(
        "@decorated",
        "@twice",
        "def short():",
        "    return 1",
        "class Thing:",
        "    def method(self):",
        "        def inner():",
        "            pass",
        "        return inner",
    )
    assert function_lengths(tree) == [
        (3, "short", 2),
        (6, "Thing.method", 4),
        (7, "Thing.method.inner", 2),
    ]
