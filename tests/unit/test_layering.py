"""`rlaif.core` is pure: importing it pulls in neither ray, vllm nor deepspeed (docs/design.md §3)."""

import re
import subprocess
import sys
from pathlib import Path

import rlaif.core

CORE = Path(rlaif.core.__file__).parent
FORBIDDEN = ("ray", "vllm", "deepspeed", "transformers")


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
    # core <- engines <- trainers <- actors <- stages <- run
    order = ["core", "engines", "trainers", "actors", "stages"]
    root = CORE.parent
    for i, layer in enumerate(order):
        above = order[i + 1 :] + ["run"]
        for path in (root / layer).glob("*.py"):
            text = path.read_text()
            for upper in above:
                pattern = rf"^\s*(from|import)\s+rlaif\.{upper}\b"
                assert not re.search(pattern, text, re.M), f"{path} imports the higher layer rlaif.{upper}"
