"""infra/terraform parsed with python-hcl2, as the tests query it (terraform validate needs the provider,
which cannot be downloaded here, so the structure is checked from the parsed HCL instead)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "infra" / "terraform"
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False)

# Names that are not declarations: Terraform's own objects.
BUILTIN_ROOTS = {"each", "count", "path", "self", "terraform"}
_REF_VAR = re.compile(r"(?<![\w.\-])var\.([A-Za-z_][\w-]*)")
_REF_LOCAL = re.compile(r"(?<![\w.\-])local\.([A-Za-z_][\w-]*)")
_REF_MODULE = re.compile(r"(?<![\w.\-])module\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_][\w-]*))?")
_REF_DATA = re.compile(r"(?<![\w.\-])data\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)")
_REF_RESOURCE = re.compile(
    r"(?<![\w.\-])((?:google|google-beta|archive|random|time|null)_[A-Za-z0-9_]+|terraform_data)\.([A-Za-z_][\w-]*)"
)


def parse_file(path: Path) -> dict[str, Any]:
    return dict(hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=_OPTIONS))


def expressions(node: Any) -> Iterator[str]:
    """Every string in a parsed tree that holds an expression (``${...}``)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from expressions(value)
    elif isinstance(node, str) and "${" in node:
        yield node


PROSE_KEYS = frozenset({"description", "error_message", "display_name", "title"})


def strings(node: Any, *, keys: bool = False, prose: bool = False) -> Iterator[str]:
    """Every string value (literal or expression) in a parsed tree; block labels and attribute names
    too with ``keys``; descriptions and messages too with ``prose``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not prose and key in PROSE_KEYS:
                continue
            if keys:
                yield str(key)
            yield from strings(value, keys=keys, prose=prose)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value, keys=keys, prose=prose)
    elif isinstance(node, str):
        yield node


def dynamic_iterators(node: Any) -> set[str]:
    """Names of dynamic-block iterators (the block label, or its ``iterator`` argument)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "dynamic" and isinstance(value, list):
                for block in value:
                    for label, body in block.items():
                        found.add(
                            str(unwrap(body.get("iterator", label))) if isinstance(body, dict) else label
                        )
            found |= dynamic_iterators(value)
    elif isinstance(node, list):
        for value in node:
            found |= dynamic_iterators(value)
    return found


def unwrap(value: Any) -> Any:
    """``"${x}"`` -> ``"x"`` for a value that is one whole expression."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}") and value.count("${") == 1:
        return value[2:-1]
    return value


@dataclass
class Module:
    """One Terraform module (a directory of .tf files)."""

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def blocks(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, doc in sorted(self.files.items()):
            for block in doc.get(kind, []):
                yield name, block

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {k: v for _, b in self.blocks("variable") for k, v in b.items()}

    @property
    def locals(self) -> dict[str, Any]:
        return {k: v for _, b in self.blocks("locals") for k, v in b.items() if not k.startswith("__")}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {k: v for _, b in self.blocks("output") for k, v in b.items()}

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return {k: v for _, b in self.blocks("module") for k, v in b.items()}

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        """``type.name`` -> body."""
        out: dict[str, dict[str, Any]] = {}
        for _, block in self.blocks("resource"):
            for rtype, named in block.items():
                for name, body in named.items():
                    out[f"{rtype}.{name}"] = body
        return out

    @property
    def data(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for _, block in self.blocks("data"):
            for dtype, named in block.items():
                for name, body in named.items():
                    out[f"{dtype}.{name}"] = body
        return out

    def resources_of(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {k.split(".", 1)[1]: v for k, v in self.resources.items() if k.split(".", 1)[0] == rtype}

    def unresolved(self, modules: dict[Path, Module]) -> list[str]:
        """References to something this module does not declare (empty: all resolve)."""
        declared_vars = set(self.variables)
        declared_locals = set(self.locals)
        declared_modules = self.modules
        declared_resources = set(self.resources)
        declared_data = set(self.data)
        problems: list[str] = []
        for fname, doc in sorted(self.files.items()):
            iterators = dynamic_iterators(doc)
            for expr in expressions(doc):
                where = f"{_display(self.path)}/{fname}"
                problems += [
                    f"{where}: var.{n} undeclared" for n in _REF_VAR.findall(expr) if n not in declared_vars
                ]
                problems += [
                    f"{where}: local.{n} undeclared"
                    for n in _REF_LOCAL.findall(expr)
                    if n not in declared_locals
                ]
                for dtype, dname in _REF_DATA.findall(expr):
                    if f"{dtype}.{dname}" not in declared_data:
                        problems.append(f"{where}: data.{dtype}.{dname} undeclared")
                for rtype, rname in _REF_RESOURCE.findall(expr):
                    if rtype in iterators:
                        continue
                    if f"{rtype}.{rname}" not in declared_resources:
                        problems.append(f"{where}: {rtype}.{rname} undeclared")
                for mname, output in _REF_MODULE.findall(expr):
                    if mname not in declared_modules:
                        problems.append(f"{where}: module.{mname} undeclared")
                        continue
                    child = modules.get(self.module_source(mname))
                    if child is None:
                        problems.append(f"{where}: module.{mname}: source not found")
                    elif output and output not in child.outputs:
                        problems.append(f"{where}: module.{mname}.{output}: no such output")
        return problems

    def module_source(self, name: str) -> Path:
        return (self.path / str(self.modules[name]["source"])).resolve()


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@cache
def load_modules() -> dict[Path, Module]:
    """Every directory under infra/terraform with .tf files (skipping .terraform), parsed."""
    modules: dict[Path, Module] = {}
    for tf in sorted(TERRAFORM_DIR.rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        module = modules.setdefault(tf.parent.resolve(), Module(tf.parent.resolve()))
        module.files[tf.name] = parse_file(tf)
    return modules


def root() -> Module:
    return load_modules()[TERRAFORM_DIR.resolve()]


def hcl_regex(pattern: str) -> re.Pattern[str]:
    """An HCL ``regex()`` pattern (RE2) in Python's syntax: the escapes were already decoded by the parser."""
    return re.compile(pattern)
