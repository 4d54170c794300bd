"""The package boundaries of proxlab/boundaries.py, checked on the code's import statements (ast: nothing is
imported). Each test can fail: test_checker_catches_violations feeds the checker code that breaks every rule."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from proxlab import boundaries as B

ROOT = Path(__file__).resolve().parents[1] / "proxlab"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def part_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def imports(source: str) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) of every import statement; relative imports are rejected below."""
    tree = ast.parse(source)
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) not in nested, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = "." * node.level + (node.module or "")
            if node.module == "proxlab" and node.level == 0:  # `from proxlab import runner`
                out += [(f"proxlab.{a.name}", id(node) not in nested, node.lineno) for a in node.names]
            else:
                out.append((name, id(node) not in nested, node.lineno))
    return out


def violations(part: str, source: str, where: str) -> list[str]:
    bad = []
    allowed = {part, *B.ALLOWED_PROXLAB_IMPORTS[part]}
    for module, top_level, line in imports(source):
        head = module.split(".")[0]
        at = f"{where}:{line}: {part} imports {module}"
        if module.startswith("."):
            bad.append(f"{at} (relative import: spell the part out)")
        elif head == "proxlab":
            target = module.split(".")[1] if "." in module else ""
            if target not in allowed and not target.startswith("__"):  # proxlab.__version__ is everyone's
                bad.append(f"{at} (allowed: {sorted(allowed)})")
        elif part == "core" and head not in STDLIB:
            ok = head in B.CORE_THIRD_PARTY or (not top_level and head in B.CORE_THIRD_PARTY_LAZY)
            if not ok:
                bad.append(f"{at} (core: standard library, {B.CORE_THIRD_PARTY}, lazily {B.CORE_THIRD_PARTY_LAZY})")
        if head in B.FORBIDDEN_IMPORTS.get(part, ()):
            bad.append(f"{at} (forbidden in {part})")
        if top_level and head in B.FORBIDDEN_MODULE_LEVEL_IMPORTS.get(part, ()):
            bad.append(f"{at} (only inside a function in {part})")
    return bad


def test_every_module_belongs_to_a_declared_part():
    parts = {part_of(p) for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT}
    assert parts <= set(B.ALLOWED_PROXLAB_IMPORTS), sorted(parts - set(B.ALLOWED_PROXLAB_IMPORTS))


def test_imports_respect_the_boundaries():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent == ROOT and path.name == "__init__.py":
            continue
        bad += violations(part_of(path), path.read_text(), str(path.relative_to(ROOT.parent)))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("part,source,needle", [
    ("refine", "from proxlab.runner.graph import plan\n", "allowed"),
    ("pretrain", "import proxlab.report.sweep\n", "allowed"),
    ("evaluate", "from proxlab import cli\n", "allowed"),
    ("models", "from proxlab.refine import rules\n", "allowed"),
    ("core", "from proxlab.models import presets\n", "allowed"),
    ("core", "import torch\n", "core: standard library"),
    ("core", "import wandb\n", "core: standard library"),
    ("refine", "def f():\n    import litgpt\n", "forbidden in refine"),
    ("refine", "from lightning.fabric import Fabric\n", "forbidden in refine"),
    ("evaluate", "import vllm\n", "only inside a function"),
    ("refine", "from .programs import x\n", "relative import"),
])
def test_checker_catches_violations(part, source, needle):
    found = violations(part, source, "x.py")
    assert found and needle in found[0], found


@pytest.mark.parametrize("part,source", [
    ("core", "import json\nimport pyarrow as pa\ndef f():\n    import wandb\n"),
    ("evaluate", "def f():\n    import vllm\n"),
    ("refine", "from proxlab.core.stage import StageSpec\nfrom proxlab.models import resolve_model\n"),
    ("runner", "from proxlab.refine import rules\n"),
])
def test_checker_accepts_allowed_imports(part, source):
    assert violations(part, source, "x.py") == []
