"""The house plan, checked: every import in ``src/`` against the layers of docs/architecture.md.

Every ``import`` of ``src/classbalanced`` is read with :mod:`ast` (relative and absolute,
at a module's top and inside its functions). The layer list is the ``text`` block under
"## The layers" of docs/architecture.md, read here: the page and this test share it. Each
of its lines names the modules of one layer (``engine/``, ``cli.py``, ...) before two
spaces, top layer first; a line that starts with a space goes on describing the layer
above it. The tests fail on

* a module that no layer names (or a name on the page that is no module);
* a cycle: modules that import each other, directly or through others;
* an import that climbs the layers (a module importing one on a layer above its own);
* the "never" rules, whatever order the page gives (:data:`NEVER`);
* an optional engine (Ray, submitit, Optuna, ...) imported at a module's top, or inside a
  function without a reason comment;
* an import inside a function that is neither an optional engine nor heavy plotting.

A package's ``__init__`` importing its own modules is not a cycle: importing
``engine.loop`` runs ``engine/__init__.py`` first, but only the imports a module writes
count. The known violations that later parts of issue 31 remove are named below; each
entry must still be true (the lists only shrink): delete an entry once it is fixed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "classbalanced"
PAGE = ROOT / "docs" / "architecture.md"

#: optional engines: imported only inside the function that needs them (reason comment)
OPTIONAL_ENGINES = frozenset(
    {"ray", "submitit", "optuna", "onnx", "onnxscript", "onnxruntime", "safetensors"}
    | {"transformers", "datasets", "lightning", "pytorch_lightning"}
)
#: heavy plotting, which may be imported where a figure is drawn (reason comment)
PLOTTING = frozenset({"matplotlib", "plots"})
#: never, whatever the layer order says: (importer, imported) names ("": any module);
#: losses/ and weights.py import nothing above them
NEVER = (
    [("", "cli"), ("", "integrations"), ("data", "engine")]
    + [("engine", name) for name in ("use", "tune", "decouple", "reproduce", "launch")]
    + [
        (low, high)
        for low in ("losses", "weights")
        for high in ("cli", "tune", "launch", "reproduce", "use", "decouple", "engine")
        + ("config", "models", "data", "plots", "demo", "integrations")
    ]
)
#: the entry point may import cli, and integrations/ its own modules
NEVER_EXCEPT = {("__main__", "cli")}
#: imports deferred for speed, for good: ``import classbalanced`` loads use/'s names on
#: first use (PEP 562 ``__getattr__``), and the registry imports torchvision.models (seconds)
#: only when a torchvision network is built
DEFERRED = {("", "use"), ("models.registry", "torchvision")}

# -- known violations (each entry must still hold; delete it once fixed) --------------

KNOWN_CYCLES: list[set[str]] = []
#: imports that climb the layers
KNOWN_CLIMBS: set[tuple[str, str]] = set()
#: modules with imports inside functions that issue 31's later parts move to the top:
#: none left
KNOWN_LAZY: set[str] = set()
#: launch/_slurm_task.py imports submitit at its top (issue 24 makes it importable
#: without), so the SLURM launcher imports it inside the functions that submit
KNOWN_LAZY_IMPORTS = {("launch.slurm", "launch._slurm_task")}
KNOWN_OPTIONAL_AT_TOP = {("launch._slurm_task", "submitit")}


# -- reading the page and the code -------------------------------------------------------


def read_layers(page: str) -> list[list[str]]:
    """The module names of each layer, top first, from the page's layer block."""
    found = re.search(r"^## The layers\n.*?^```text\n(.*?)^```", page, re.S | re.M)
    if found is None:
        raise ValueError("no ```text block under '## The layers'")
    layers = []
    for line in found.group(1).splitlines():
        if not line.strip() or line[0].isspace():
            continue  # a description going on
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split()
        bad = [n for n in names if not re.fullmatch(r"\w+(\.py|/)", n)]
        if bad:
            raise ValueError(f"expected module names (x.py, x/) before two spaces, got {bad}")
        layers.append([n.removesuffix(".py").removesuffix("/") for n in names])
    return layers


@dataclass(frozen=True)
class Import:
    importer: str  # dotted, relative to the package: "engine.loop", "" for its __init__
    imported: str  # a module of the package, or the top-level name of another package
    line: int
    lazy: bool  # inside a function
    comment: bool  # a comment on its line(s)

    @property
    def internal(self) -> bool:
        return not self.imported.startswith("/")


def package_modules(package: Path) -> dict[str, Path]:
    """``"engine.loop" -> path`` of every module (``"engine"``: its ``__init__``; ``""``: the
    package's own)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(node, name: str, is_package: bool, modules, root: str) -> list[str]:
    """What an import statement imports: package modules by name, other packages as
    ``"/top"``."""
    if isinstance(node, ast.Import):
        dotted = [alias.name for alias in node.names]
    elif node.level == 0:
        dotted = [f"{node.module}.{alias.name}" for alias in node.names]
    else:
        here = name.split(".") if name else []
        base = here if is_package else here[:-1]
        base = base[: len(base) - node.level + 1]
        prefix = ".".join([root, *base, *([node.module] if node.module else [])])
        dotted = [f"{prefix}.{alias.name}" for alias in node.names]
    out = []
    for full in dotted:
        if full.split(".")[0] != root:
            out.append("/" + full.split(".")[0])
            continue
        inner = full.removeprefix(root).lstrip(".")
        while inner and inner not in modules:  # `from x import name`: the module x
            inner = inner.rpartition(".")[0]
        out.append(inner)
    return out


def read_imports(package: Path) -> list[Import]:
    modules = package_modules(package)
    root = package.name
    found = []
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        lazy_nodes = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"
            ):
                continue
            comment = any("#" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1))
            is_package = path.name == "__init__.py"
            for target in _targets(node, name, is_package, modules, root):
                if target != name:
                    found.append(Import(name, target, node.lineno, id(node) in lazy_nodes, comment))
    return found


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


# -- the checks ----------------------------------------------------------------------


def layer_of(modules, layers: list[list[str]]) -> tuple[dict[str, int], list[str]]:
    """Module -> index of its layer (0: top), and the page's problems: modules no layer
    names, names that are no module, names given twice."""
    index, problems = {}, []
    for i, names in enumerate(layers):
        for short in names:
            key = "" if short == "__init__" else short
            covered = [m for m in modules if (m == key if key == "" else _inside(m, key))]
            if not covered:
                problems.append(f"the page names {short}, which is no module")
            for m in covered:
                if m in index:
                    problems.append(f"{m or '__init__'} is on two layers")
                index[m] = i
    problems += [f"{m or '__init__'} is on no layer" for m in modules if m not in index]
    return index, problems


def cycles(imports: list[Import]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.internal:
            graph.setdefault(imp.importer, set()).add(imp.imported)
            graph.setdefault(imp.imported, set())
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def climbs(imports: list[Import], index: dict[str, int]) -> set[tuple[str, str]]:
    return {
        (i.importer, i.imported)
        for i in imports
        if i.internal and index[i.imported] < index[i.importer]
    }


def never(imports: list[Import]) -> set[tuple[str, str]]:
    return {
        (i.importer, i.imported)
        for i in imports
        if i.internal
        and (i.importer, i.imported) not in NEVER_EXCEPT
        and not (_inside(i.importer, "integrations") and _inside(i.imported, "integrations"))
        and any(_inside(i.importer, a) and _inside(i.imported, b) for a, b in NEVER)
    }


def optional_at_top(imports: list[Import]) -> set[tuple[str, str]]:
    return {
        (i.importer, i.imported[1:])
        for i in imports
        if not i.internal and i.imported[1:] in OPTIONAL_ENGINES and not i.lazy
    }


def lazy_without_reason(imports: list[Import]) -> set[tuple[str, str]]:
    """Imports inside functions: of something else than an optional engine or plotting,
    or without a reason comment."""
    return {
        (i.importer, i.imported.lstrip("/"))
        for i in imports
        if i.lazy
        and not (i.imported.lstrip("/") in OPTIONAL_ENGINES | PLOTTING and i.comment)
        and not ((i.importer, i.imported.lstrip("/")) in DEFERRED and i.comment)
    }


# -- the tests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def code():
    layers = read_layers(PAGE.read_text(encoding="utf-8"))
    modules = package_modules(PACKAGE)
    imports = read_imports(PACKAGE)
    index, problems = layer_of(modules, layers)
    return imports, index, problems


def _short(pairs) -> list[str]:
    return sorted(f"{a or '__init__'} -> {b or '__init__'}" for a, b in pairs)


def test_the_page_puts_every_module_on_one_layer(code):
    _, _, problems = code
    assert not problems, problems


def test_no_modules_import_each_other(code):
    imports, _, _ = code
    found = cycles(imports)
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not new, f"modules that import each other (inside functions too): {new}"
    assert not gone, f"fixed, delete from KNOWN_CYCLES: {gone}"


def test_no_import_climbs_the_layers(code):
    imports, index, problems = code
    if problems:
        pytest.skip("the page does not place every module (the test above says which)")
    found = climbs(imports, index)
    assert not _short(found - KNOWN_CLIMBS), "imports of a layer above the importer's"
    assert not _short(KNOWN_CLIMBS - found), "fixed, delete from KNOWN_CLIMBS"


def test_the_never_rules_hold(code):
    imports, _, _ = code
    assert not _short(never(imports))


def test_optional_engines_are_imported_inside_functions_only(code):
    imports, _, _ = code
    found = optional_at_top(imports)
    assert not _short(found - KNOWN_OPTIONAL_AT_TOP), "an optional engine at a module's top"
    assert not _short(KNOWN_OPTIONAL_AT_TOP - found), "fixed, delete from KNOWN_OPTIONAL_AT_TOP"


def test_imports_are_at_the_top_but_optional_engines_and_plotting(code):
    imports, _, _ = code
    found = lazy_without_reason(imports)
    unexpected = {
        pair for pair in found if pair[0] not in KNOWN_LAZY and pair not in KNOWN_LAZY_IMPORTS
    }
    assert not _short(unexpected), (
        "imports inside functions that are no optional engine or plotting, or lack a "
        "one-word reason comment"
    )
    still = {module for module, _ in found}
    assert not sorted(KNOWN_LAZY - still), "fixed, delete from KNOWN_LAZY"
    assert not _short(KNOWN_LAZY_IMPORTS - found), "fixed, delete from KNOWN_LAZY_IMPORTS"


# -- the checks find what they look for (a made-up package) ---------------------------


LAYERS_PAGE = """# x

## The layers

```text
top.py        the top layer
              goes on here
mid/ util.py  the middle
low.py        the bottom
```
"""


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checks_find_each_kind_of_violation(tmp_path):
    root = _package(
        tmp_path,
        {
            "top.py": "from .mid import a\nimport json\n",
            "mid/__init__.py": "from . import a\n",
            "mid/a.py": "import ray\nfrom ..low import thing\n",
            "mid/b.py": "def f():\n    from .a import x  # cycle\n",
            "util.py": "def g():\n    import submitit\n\ndef h():\n    import matplotlib  # plotting\n",
            "low.py": "from pkg.mid.b import y\nfrom .top import z\n",
        },
    )
    layers = read_layers(LAYERS_PAGE)
    assert layers == [["top"], ["mid", "util"], ["low"]]
    imports = read_imports(root)
    index, problems = layer_of(package_modules(root), layers)
    assert problems == ["__init__ is on no layer"]
    # top -> mid.a -> low -> top, and low -> mid.b -> mid.a (inside a function) -> low
    assert cycles(imports) == [{"top", "mid.a", "low", "mid.b"}]
    assert climbs(imports, index) == {("low", "mid.b"), ("low", "top")}
    assert optional_at_top(imports) == {("mid.a", "ray")}
    assert lazy_without_reason(imports) == {("mid.b", "mid.a"), ("util", "submitit")}


def test_the_never_rules_catch_what_the_layers_would_allow():
    """A page reordered to put losses/ above engine/ still fails on losses importing it."""
    imports = [
        Import("losses.functional", "engine.loop", 1, lazy=True, comment=True),
        Import("engine.loop", "launch", 1, lazy=False, comment=False),
        Import("reproduce.report", "cli", 3, lazy=True, comment=False),
        Import("__main__", "cli", 1, lazy=False, comment=False),
        Import("engine.loop", "losses", 1, lazy=False, comment=False),
    ]
    assert never(imports) == {
        ("losses.functional", "engine.loop"),
        ("engine.loop", "launch"),
        ("reproduce.report", "cli"),
    }


def test_a_malformed_layer_line_is_refused():
    with pytest.raises(ValueError, match="expected module names"):
        read_layers(LAYERS_PAGE.replace("mid/ util.py  the middle", "mid/ the middle"))
    with pytest.raises(ValueError, match="no ```text block"):
        read_layers("## The layers\n\nnone\n")
