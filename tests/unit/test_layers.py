"""The server's import graph, read from the source (AST; TYPE_CHECKING imports included): no cycles,
and no module imports a layer above its own (docs/ARCHITECTURE.md names the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"

# Lowest first; a module may import its own layer and those below. A name covers the modules under it
# unless a longer name places them elsewhere (server.targets.forward sits above server.targets).
LAYERS: list[tuple[str, ...]] = [
    ("server.config", "server.errors", "server.healthcheck", "server.workers", "server.chat.affinity",
     "server.classify.admission"),
    ("server.telemetry", "server.auth"),
    ("server.targets",),
    ("server.routing.policies", "server.routing.spec", "server.routing.persistence",
     "server.routing.redis_store", "server.classify.engine", "server.classify.batching"),
    ("server.routing.registry",),
    ("server.routing.plan", "server.classify.request", "server.classify.classifier",
     "server.targets.forward"),
    ("server.chat.route",),
    ("server.chat.session", "server.health"),
    ("server.runtime",),
    ("server.rpc", "server.http", "server.console"),
    ("server.main", "server.analyze"),
]  # fmt: skip
# The packages' __init__ modules only describe them (server.telemetry re-exports its core): none is a layer
# of its own, and importing a package's module imports its __init__ first.
PACKAGES = ("server.classify", "server.routing", "server.chat")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports() -> dict[str, set[str]]:
    """Every server module and the server modules it imports, with the packages those sit in (whose
    __init__ runs first)."""
    modules = {module_name(p): p for p in SERVER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                parts = target.split(".")
                found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {m for m in found if m in modules and m != name and m not in own_packages}
    return graph


def layer_of(module: str) -> int:
    """The layer of the longest LAYERS name that covers `module`."""
    matches = [
        (len(m), level)
        for level, members in enumerate(LAYERS)
        for m in members
        if module == m or module.startswith(m + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/ARCHITECTURE.md)")
    return max(matches)[1]


def test_the_server_has_no_import_cycle() -> None:
    graph = imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [module, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
        for module, deps in imports().items()
        if module != "server" and module not in PACKAGES
        for dep in deps
        if dep not in PACKAGES and layer_of(dep) > layer_of(module)
    ]
    assert upward == []


def test_every_request_record_api_is_one_the_analysis_knows() -> None:
    """The fronts open records under literal names; the offline analysis groups by the same list."""
    from server.telemetry import CLASSIFYING_APIS

    opened = set()
    for path in SERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("request", "start")
                and isinstance(node.func.value, ast.Attribute | ast.Name)
                and getattr(node.func.value, "attr", getattr(node.func.value, "id", "")) == "telemetry"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                opened.add(node.args[0].value)
    assert opened and opened <= set(CLASSIFYING_APIS), opened - set(CLASSIFYING_APIS)


def test_grouping_packages_only_describe_their_modules() -> None:
    """The layer check may skip the grouping packages' __init__ only because they import nothing."""
    graph = imports()
    assert {p: graph[p] for p in PACKAGES} == {p: set() for p in PACKAGES}


def test_the_server_folder_stays_grouped_by_concern() -> None:
    """At most 10 modules directly in server/ (the rest sit in their concern's package), none over 400
    lines."""
    top = sorted(p.name for p in SERVER.glob("*.py"))
    assert len(top) <= 10, top
    long = {
        str(p.relative_to(ROOT)): n
        for p in SERVER.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}
