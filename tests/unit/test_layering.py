"""The layers import downward only, and `rlaif.core` is pure (docs/design.md §3).

Every import of an rlaif module counts: ``import rlaif.x``, ``from rlaif.x import y``,
``from rlaif import x``, relative imports, and imports inside functions (they run as soon as
the function does). Only imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rlaif.core

ROOT = Path(rlaif.core.__file__).parent.parent
CORE = ROOT / "core"
FORBIDDEN = ("ray", "vllm", "deepspeed", "transformers")

# Each part of the package (a subpackage or a top-level module) and its rank; a part imports
# only parts of a lower rank. core <- engines <- trainers <- actors <- stages <- run, with the
# config schema and the error classification beside the trainers, and the entry points on top.
RANKS = {
    "core": 0,
    "engines": 1,
    "config": 2,
    "errors": 2,
    "trainers": 2,
    "actors": 3,
    "judge_api": 4,
    "stages": 4,
    "plan": 5,
    "score": 5,
    "wandb_sink": 5,
    "evaluate": 6,
    "run": 6,
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def rlaif_imports(path: Path, root: Path) -> set[str]:
    """The rlaif modules `path` imports at run time, as dotted names."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from rlaif import x` / `from rlaif.stages import x`: x may be a module.
            found.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    root_name = root.name
    return {m for m in found if m == root_name or m.startswith(root_name + ".")}


def part_of(module: str) -> str:
    """The part a module belongs to: ``rlaif.stages.sft`` -> ``stages``; the package itself -> ``rlaif``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def existing_parts(root: Path) -> set[str]:
    return {p.stem for p in root.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in root.iterdir() if (p / "__init__.py").is_file()
    }


def layering_violations(root: Path, ranks: dict[str, int]) -> list[str]:
    """One line per import of a part of equal or higher rank, or of something unranked."""
    parts = existing_parts(root)
    out = [f"{root.name}.{p} has no rank in RANKS" for p in sorted(parts - ranks.keys())]
    for path in sorted(root.rglob("*.py")):
        me = part_of(module_name(path, root))
        for target in sorted(rlaif_imports(path, root)):
            other = part_of(target)
            if other not in parts or other == me:
                continue  # the package root (`__version__`) or an import within the part
            if me == root.name or ranks[other] >= ranks.get(me, -1):
                out.append(f"{path.relative_to(root.parent)} imports {target} ({me} may not import {other})")
    return out


def module_cycles(root: Path) -> list[list[str]]:
    """Import cycles between modules (depth-first search on the run-time import graph)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {m: sorted(t for t in rlaif_imports(p, root) if t in modules and t != m) for m, p in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_importing_every_core_module_loads_no_engine_or_cluster_package() -> None:
    modules = sorted(f"rlaif.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
    assert modules, "no core modules found"
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"rlaif.core imported: {out.stdout.strip()}"


def test_layers_import_downward_only() -> None:
    assert layering_violations(ROOT, RANKS) == []


def test_no_import_cycles() -> None:
    assert module_cycles(ROOT) == []


@pytest.mark.parametrize(
    ("where", "source", "message"),
    [
        (
            "core/x.py",
            "from rlaif import stages\n",
            "rlaif/core/x.py imports rlaif.stages (core may not import stages)",
        ),
        ("core/x.py", "def f():\n    import rlaif.run\n", "imports rlaif.run (core may not import run)"),
        (
            "engines/x.py",
            "from ..trainers import sft\n",
            "imports rlaif.trainers.sft (engines may not import trainers)",
        ),
        ("config.py", "from rlaif.stages.registry import NAMES\n", "(config may not import stages)"),
        ("newtool.py", "", "rlaif.newtool has no rank in RANKS"),
    ],
)
def test_the_check_finds_what_it_should(tmp_path: Path, where: str, source: str, message: str) -> None:
    root = tmp_path / "rlaif"
    for part in ("core", "engines", "trainers", "stages"):
        (root / part).mkdir(parents=True)
        (root / part / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "sft.py").unlink(missing_ok=True)
    (root / "trainers" / "sft.py").write_text("")
    (root / "stages" / "registry.py").write_text("")
    for name in ("config.py", "run.py"):
        (root / name).write_text("")
    (root / where).write_text(source)
    ranks = {k: v for k, v in RANKS.items() if k in {"core", "engines", "trainers", "config", "stages", "run"}}
    found = layering_violations(root, ranks)
    assert any(message in line for line in found), found
    # The same tree without the bad import is clean (unless the bad part is the module itself).
    if where != "newtool.py":
        (root / where).write_text("")
        assert layering_violations(root, ranks) == []


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path: Path) -> None:
    root = tmp_path / "rlaif"
    (root / "stages").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "stages" / "__init__.py").write_text("")
    (root / "config.py").write_text("def f():\n    from rlaif.stages.registry import NAMES\n")
    (root / "stages" / "registry.py").write_text("from rlaif.stages.pipeline import Stage\n")
    (root / "stages" / "pipeline.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rlaif.run\nfrom rlaif.config import X\n"
    )
    (root / "run.py").write_text("")
    assert module_cycles(root) == [["rlaif.config", "rlaif.stages.registry", "rlaif.stages.pipeline", "rlaif.config"]]
    (root / "config.py").write_text("")
    assert module_cycles(root) == []
