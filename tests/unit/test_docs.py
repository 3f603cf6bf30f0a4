"""Every `docs/<file>.md §N` cited in code, tests, benchmarks, scripts and config names a real section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("rlaif", "tests", "bench", "scripts", "conf")
SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".md", ".txt", ".toml", ".cfg"}
# `docs/design.md §5` and lists such as `docs/design.md §5, §7`.
REFERENCE = re.compile(r"docs/([\w.-]+\.md) §(\d+)((?:\s*(?:,|and)\s*§\d+)*)")
OLD_REFERENCE = "DESIGN §"


def _scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            # This file's own examples (a missing doc, a renamed section) are not citations.
            if path == Path(__file__).resolve():
                continue
            if path.is_file() and path.suffix in SUFFIXES and ".venv" not in path.parts:
                files.append(path)
    return files


def references(text: str) -> list[tuple[str, int]]:
    """(doc file, section number) for every `docs/<file>.md §N` in `text`."""
    found = []
    for m in REFERENCE.finditer(text):
        found.append((m.group(1), int(m.group(2))))
        found.extend((m.group(1), int(n)) for n in re.findall(r"§(\d+)", m.group(3)))
    return found


def unresolved(refs: list[tuple[str, int]], docs_dir: Path) -> list[str]:
    """The references whose file is missing or has no heading starting `## N.`."""
    bad = []
    for name, section in sorted(set(refs)):
        path = docs_dir / name
        if not path.is_file():
            bad.append(f"docs/{name} §{section}: no such file")
            continue
        heading = re.compile(rf"^## {section}\. \S", re.M)
        if not heading.search(path.read_text(encoding="utf-8")):
            bad.append(f"docs/{name} §{section}: no heading '## {section}. …'")
    return bad


def test_code_cites_design_sections() -> None:
    refs = [r for path in _scanned_files() for r in references(path.read_text(encoding="utf-8", errors="replace"))]
    # The layers, resume and weight-sync comments at least must be there; an empty scan is a broken test.
    assert {("design.md", 3), ("design.md", 4), ("design.md", 5)} <= set(refs), refs
    assert unresolved(refs, ROOT / "docs") == []


def test_no_reference_to_the_old_brief_remains() -> None:
    stale = []
    for path in _scanned_files():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_REFERENCE in line:
                stale.append(f"{path.relative_to(ROOT)}:{i}")
    assert stale == []


def test_design_numbers_its_sections_in_order() -> None:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\d+)\. ", text, re.M)
    assert headings == [str(n) for n in range(1, 10)]


def test_check_fails_on_a_renamed_section_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "design.md").write_text("# d\n\n## 1. The algorithm\n\n## Weight sync\n", encoding="utf-8")
    refs = references("see docs/design.md §1, §2 and docs/other.md §1")
    assert refs == [("design.md", 1), ("design.md", 2), ("other.md", 1)]
    assert unresolved(refs, tmp_path) == [
        "docs/design.md §2: no heading '## 2. …'",
        "docs/other.md §1: no such file",
    ]


def _config_reference():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_matches_the_schemas_and_defaults(tmp_path: Path) -> None:
    ref = _config_reference()
    assert ref.main(["--check"]) == 0, "docs/config.md is stale: run python scripts/config_reference.py"
    # The check fails on a reference that no longer matches (a default changed by hand here).
    stale = tmp_path / "config.md"
    stale.write_text(
        (ROOT / "docs" / "config.md").read_text().replace("| `seed` | `int` | `0` |", "| `seed` | `int` | `1` |")
    )
    assert ref.main(["--check", "--output", str(stale)]) == 1


def test_every_config_key_is_explained() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 150
    unexplained = [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]
    assert unexplained == [], f"fields with no comment in rlaif/config.py: {unexplained}"
    for key in ("ppo.sensitive_fraction", "eval.num_sensitive_harmful", "cluster.learner.threads_per_worker"):
        assert f"| `{key}` |" in text
