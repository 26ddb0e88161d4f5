"""Import rules of the layers, read with `ast`: cycles count module-level imports only, not TYPE_CHECKING ones."""

# What counts as an import, and why:
# - rules (a)-(c), forbidden dependencies: every import statement in the file, wherever it sits (module level,
#   in a function, under `if TYPE_CHECKING:`), since a layer that must not know a module must not name it at all;
# - rule (d), cycles: only imports that run when the module is imported: module-level statements (also inside a
#   module-level `if`/`try`/`with` or a class body), minus those under `if TYPE_CHECKING:`. A function-local
#   import runs once every module is loaded, so it cannot take part in an import cycle; it is the accepted way
#   to defer a dependency, and counting it would forbid that.
# `from a.b import c` depends on module `a.b.c` when that is a scanned module, else on `a.b`. The package
# `__init__`s Python runs on the way are not counted: a package importing its own submodules would otherwise
# always look like a cycle.

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "adapters", "security")
CODEC_FORBIDDEN = ("security", "gateway.storage", "gateway.api")
CANONICAL_ALLOWED = ("pydantic", "pydantic_core", "orjson", "gateway.canonical")  # pydantic_core is pydantic's own core
SQL_HOMES = ("gateway.storage", "gateway.cli")
# "import": runs when the module is imported; "typing": under `if TYPE_CHECKING:`; "call": in a function.
When = Literal["import", "typing", "call"]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or, for a name out of a package we do not scan, its module)
    path: Path
    line: int
    when: When

    @property
    def at_import_time(self) -> bool:
        return self.when == "import"

    def where(self, root: Path) -> str:
        note = {"import": "", "typing": " [under TYPE_CHECKING]", "call": " [in a function]"}[self.when]
        return f"{self.path.relative_to(root)}:{self.line}{note}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        if (root / package).is_dir():
            yield from sorted((root / package).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(body: list[ast.stmt], when: When) -> Iterator[tuple[ast.Import | ast.ImportFrom, When]]:
    """Every import statement under `body`, with when it runs."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, when
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, "call")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "typing" if when == "import" else when)
            yield from _walk(node.orelse, when)
        else:  # if / try / with / for / match, and class bodies (run at import time): the statements inside
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if not children:
                    continue
                for child in children:
                    if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                        yield from _walk(child.body, when)
                if isinstance(children[0], ast.stmt):
                    yield from _walk(children, when)


def _resolve(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    targets = []
    for alias in node.names:
        child = f"{base}.{alias.name}" if base else alias.name
        targets.append(child if child in known else base)
    return targets


def collect(root: Path) -> list[Import]:
    files = list(source_files(root))
    known = {module_name(p, root) for p in files}
    found: dict[tuple[str, str, int], Import] = {}
    for path in files:
        module = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, when in _walk(tree.body, "import"):
            for target in _resolve(node, module, path.name == "__init__.py", known):
                # One per statement and target: `from sqlalchemy import a, b` is one offence, not two.
                found.setdefault((module, target, node.lineno), Import(module, target, path, node.lineno, when))
    return list(found.values())


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def codec_violations(imports: list[Import], root: Path) -> list[str]:
    """(a) A codec (adapters/<counterpart>/codec.py) stays pure: no security, no storage, no HTTP API."""
    return [f"{i.where(root)}: codec {i.source} imports {i.target}" for i in imports
            if i.source.startswith("adapters.") and i.source.endswith(".codec") and i.source.count(".") == 2
            and _under(i.target, CODEC_FORBIDDEN)]


def canonical_violations(imports: list[Import], root: Path) -> list[str]:
    """(b) The canonical model needs only the standard library, pydantic and orjson."""
    return [f"{i.where(root)}: canonical {i.source} imports {i.target}" for i in imports
            if _under(i.source, ("gateway.canonical",))
            and i.target.split(".")[0] not in sys.stdlib_module_names
            and not _under(i.target, CANONICAL_ALLOWED)]


def sqlalchemy_violations(imports: list[Import], root: Path) -> list[str]:
    """(c) SQL lives in gateway/storage/ (and the CLI's engine set-up), nowhere else."""
    return [f"{i.where(root)}: {i.source} imports {i.target}" for i in imports
            if _under(i.target, ("sqlalchemy",)) and not _under(i.source, SQL_HOMES)]


def import_cycles(imports: list[Import], root: Path) -> list[str]:
    """(d) Each group of modules that import each other at import time, with one cycle and its import lines."""
    modules = {i.source for i in imports}
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for i in imports:
        if i.at_import_time and i.target in modules and i.target != i.source:
            edges[i.source].setdefault(i.target, i)
    out = []
    for group in _strongly_connected(edges):
        if len(group) < 2:
            continue
        cycle = _shortest_cycle(min(group), edges, group)
        steps = [edges[a][b] for a, b in zip(cycle, cycle[1:])]
        out.append(f"cycle among {len(group)} modules ({', '.join(sorted(group))}):\n"
                   + "\n".join(f"    {s.source} -> {s.target}  ({s.where(root)})" for s in steps))
    return out


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (a deep module graph must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _shortest_cycle(start: str, edges: dict[str, dict[str, Import]], group: set[str]) -> list[str]:
    """Breadth-first within the group from `start` back to `start`: [start, ..., start]."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child not in group:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover (a group of two or more has one)


def _report(title: str, problems: list[str]) -> str:
    return f"{title}: {len(problems)}\n" + "\n".join(f"  {p}" for p in problems)


# --- the rules, on this repository ---

IMPORTS = collect(ROOT)


def test_codecs_import_no_security_storage_or_api() -> None:
    problems = codec_violations(IMPORTS, ROOT)
    assert not problems, _report("codec imports outside the codec layer", problems)


def test_canonical_model_imports_only_stdlib_pydantic_orjson() -> None:
    problems = canonical_violations(IMPORTS, ROOT)
    assert not problems, _report("canonical-model imports of other packages", problems)


def test_sqlalchemy_only_in_storage_and_cli() -> None:
    problems = sqlalchemy_violations(IMPORTS, ROOT)
    assert not problems, _report("SQLAlchemy imports outside gateway/storage and gateway/cli", problems)


def test_no_import_cycles() -> None:
    """Module-level imports only (see the note at the top): a deferred or typing-only import is no cycle."""
    problems = import_cycles(IMPORTS, ROOT)
    assert not problems, _report("import cycles", problems)


def test_the_scan_sees_the_source() -> None:
    # A moved root or a broken walk would make every rule pass vacuously.
    sources = {i.source for i in IMPORTS}
    assert {"gateway.bootstrap", "gateway.mapping", "adapters.con.codec", "security.httpsig"} <= sources


# --- the checker itself, on a synthetic tree ---

def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_finds_each_kind_of_offence(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/a.py": "import gateway.b\n",
        "gateway/b.py": "from gateway import c\n",
        "gateway/c.py": "from gateway.a import thing\n",
        "gateway/canonical/__init__.py": "",
        "gateway/canonical/model.py": "import json\nimport pydantic.fields\nfrom gateway.canonical import x\n"
                                      "import httpx\nfrom gateway.mapping import Instance\n",
        "gateway/storage/__init__.py": "",
        "gateway/storage/db.py": "import sqlalchemy\n",
        "gateway/report.py": "def f():\n    from sqlalchemy import select\n",
        "adapters/__init__.py": "",
        "adapters/x/__init__.py": "",
        "adapters/x/codec.py": "from typing import TYPE_CHECKING\nfrom gateway.wire import WireRequest\n"
                               "from security.xmlparse import parse_xml\nif TYPE_CHECKING:\n"
                               "    from gateway.api.app import App\ndef f():\n    import gateway.storage.db\n",
        "adapters/x/simulator.py": "from security.parties import PartyKey\n",
        "security/__init__.py": "",
        "security/xmlparse.py": "",
    })
    imports = collect(tmp_path)
    assert codec_violations(imports, tmp_path) == [
        "adapters/x/codec.py:3: codec adapters.x.codec imports security.xmlparse",
        "adapters/x/codec.py:5 [under TYPE_CHECKING]: codec adapters.x.codec imports gateway.api.app",
        "adapters/x/codec.py:7 [in a function]: codec adapters.x.codec imports gateway.storage.db",
    ]
    assert canonical_violations(imports, tmp_path) == [
        "gateway/canonical/model.py:4: canonical gateway.canonical.model imports httpx",
        "gateway/canonical/model.py:5: canonical gateway.canonical.model imports gateway.mapping",
    ]
    assert sqlalchemy_violations(imports, tmp_path) == [
        "gateway/report.py:2 [in a function]: gateway.report imports sqlalchemy"]
    cycles = import_cycles(imports, tmp_path)
    assert cycles == ["cycle among 3 modules (gateway.a, gateway.b, gateway.c):\n"
                      "    gateway.a -> gateway.b  (gateway/a.py:1)\n"
                      "    gateway.b -> gateway.c  (gateway/b.py:1)\n"
                      "    gateway.c -> gateway.a  (gateway/c.py:1)"]


def test_checker_ignores_typing_only_and_deferred_imports_for_cycles(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/a.py": "from typing import TYPE_CHECKING\nimport gateway.b\n",
        "gateway/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from gateway.a import A\nelse:\n    pass\n",
        "gateway/c.py": "import gateway.d\n",
        "gateway/d.py": "def late():\n    import gateway.c\n",
        "gateway/e.py": "try:\n    import gateway.f\nexcept ImportError:\n    pass\n",
        "gateway/f.py": "class K:\n    import gateway.e\n",
    })
    imports = collect(tmp_path)
    assert import_cycles(imports, tmp_path) == [
        "cycle among 2 modules (gateway.e, gateway.f):\n"
        "    gateway.e -> gateway.f  (gateway/e.py:2)\n"
        "    gateway.f -> gateway.e  (gateway/f.py:2)"]


def test_checker_resolves_relative_imports(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/pkg/__init__.py": "from . import one\n",
        "gateway/pkg/one.py": "from .two import thing\n",
        "gateway/pkg/two.py": "from ..pkg import one\n",
    })
    imports = collect(tmp_path)
    assert {(i.source, i.target) for i in imports} == {
        ("gateway.pkg", "gateway.pkg.one"), ("gateway.pkg.one", "gateway.pkg.two"),
        ("gateway.pkg.two", "gateway.pkg.one")}
    assert len(import_cycles(imports, tmp_path)) == 1


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/wire.py": "import dataclasses\n",
        "gateway/canonical/__init__.py": "",
        "gateway/canonical/messages.py": "import orjson\nfrom pydantic import BaseModel\n",
        "gateway/mapping.py": "from gateway.canonical.messages import Domain\n",
        "adapters/__init__.py": "",
        "adapters/x/__init__.py": "",
        "adapters/x/codec.py": "from gateway.mapping import Instance\nfrom gateway.wire import WireRequest\n",
        "security/__init__.py": "",
        "security/pins.py": "from gateway.mapping import Mappings\n",
        "gateway/storage/__init__.py": "",
        "gateway/storage/db.py": "from sqlalchemy.ext.asyncio import create_async_engine\n",
        "gateway/cli/__init__.py": "",
        "gateway/cli/main.py": "import sqlalchemy\n",
    })
    imports = collect(tmp_path)
    assert not (codec_violations(imports, tmp_path) + canonical_violations(imports, tmp_path)
                + sqlalchemy_violations(imports, tmp_path) + import_cycles(imports, tmp_path))
