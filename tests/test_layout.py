"""The layout rules of docs/architecture.md, checked: layers, sizes, the error tree.

The layers are read from the doc itself (its ```layers block), so the rule a reader sees
is the rule the suite enforces.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import spoolvault
from spoolvault import errors

ROOT = Path(spoolvault.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
MAX_LINES = 900  # docs/architecture.md: "no module over about 900 lines"


def layers() -> dict[str, int]:
    """Module or package name (relative to spoolvault) -> its layer, from the doc."""
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/architecture.md has no ```layers block"
    out: dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\d+)\s+[\w ]+:\s*(.*)", line)
        if m:
            for name in m.group(2).split():
                out[name] = int(m.group(1))
    return out


def modules() -> list[tuple[str, Path]]:
    """Every module of the package as (dotted name under spoolvault, path)."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts and parts[0] == "db" and "migrations" in parts:
            continue  # Alembic's scripts are loaded by Alembic, not imported
        out.append((".".join(parts), path))
    return out


def layer_of(name: str, table: dict[str, int]) -> int | None:
    """The layer of the most specific table entry that names `name` or a parent of it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in table:
            return table[key]
    return None


def imports(name: str, path: Path) -> set[str]:
    """The spoolvault modules `path` imports (relative names), at any depth of the file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                base = [p for p in base if p]
                mod = ".".join(["spoolvault", *base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            targets = [mod]
        else:
            continue
        for target in targets:
            if target == "spoolvault" or not target.startswith("spoolvault."):
                continue
            found.add(target.removeprefix("spoolvault."))
    return found


def test_every_module_has_a_layer() -> None:
    table = layers()
    missing = [name for name, _ in modules() if name and layer_of(name, table) is None]
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    table = layers()
    wrong = []
    for name, path in modules():
        mine = layer_of(name, table)
        for target in imports(name, path):
            theirs = layer_of(target, table)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not wrong, "\n".join(wrong)


def test_packages_do_not_import_each_other_in_a_circle() -> None:
    """Within a layer, packages may use each other, but never both ways round."""
    table = layers()
    edges: dict[str, set[str]] = {}
    for name, path in modules():
        top = name.split(".")[0]
        for target in imports(name, path):
            other = target.split(".")[0]
            if other != top and layer_of(other, table) == layer_of(top, table):
                edges.setdefault(top, set()).add(other)
    both = sorted(
        {tuple(sorted((a, b))) for a, bs in edges.items() for b in bs if a in edges.get(b, set())}
    )
    assert not both, f"packages importing each other: {both}"


@pytest.mark.parametrize("name,path", modules(), ids=[n or "spoolvault" for n, _ in modules()])
def test_no_module_is_over_the_size_limit(name: str, path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES})"


def public_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(spoolvault.__path__, "spoolvault."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not attr.startswith("_")
            ):
                found[f"{module.__name__}.{attr}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_public_exception_is_a_spoolvault_error() -> None:
    strays = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in public_exceptions()
        if not issubclass(cls, errors.SpoolvaultError)
    ]
    assert not strays, f"public exceptions outside the tree: {strays}"


def test_the_tree_in_errors_py_names_every_public_exception() -> None:
    tree = errors.__doc__ or ""
    unnamed = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in public_exceptions()
        if not re.search(rf"\b{cls.__name__}\b", tree)
    ]
    assert not unnamed, f"exceptions the tree at the top of errors.py does not name: {unnamed}"


def test_every_error_class_has_an_http_and_an_ipp_status() -> None:
    for cls in public_exceptions():
        if issubclass(cls, errors.SpoolvaultError):
            assert 400 <= cls.http_status <= 599, cls
            assert 0x0400 <= cls.ipp_status <= 0x05FF, cls
