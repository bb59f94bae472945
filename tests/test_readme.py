"""The README matches the code: its settings table, the make targets it names, its local links."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"

# `make dev`, `make test` ... in prose or code; a word after "make" that is not a target
# (e.g. "make sure") would have to be phrased differently, which keeps the README exact.
MAKE_MENTION = re.compile(r"(?<![\w.-])make ([a-z][a-z0-9_-]*)")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?: [A-Za-z0-9_.-]+)*):(?!=)", re.MULTILINE)
LOCAL_LINK = re.compile(r"\]\((?!https?://|#)([^)\s]+)\)")


def _settings_table_script() -> ModuleType:
    # scripts/ is not a package: load the script the README tells people to run.
    path = ROOT / "scripts" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _readme_table(text: str) -> str:
    assert text.count(START) == 1, f"README.md needs exactly one {START}"
    assert text.count(END) == 1, f"README.md needs exactly one {END}"
    start, end = text.index(START) + len(START), text.index(END)
    assert start < end, "the settings-table markers are in the wrong order"
    return text[start:end].strip()


def test_settings_table_matches_the_code() -> None:
    expected = _settings_table_script().settings_table().strip()
    assert _readme_table(_readme()) == expected, (
        "README.md's settings table is out of date: paste the output of "
        "`.venv/bin/python scripts/settings_table.py` between the settings-table markers"
    )


def test_settings_table_names_every_setting_with_a_description() -> None:
    from config.settings import Settings

    rows = [line for line in _readme_table(_readme()).splitlines() if line.startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    assert names == [name.upper() for name in Settings.model_fields]
    undocumented = [row.split("`")[1] for row in rows if row.rstrip().endswith("|  |")]
    assert undocumented == [], f"settings without a description: {undocumented}"


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets: set[str] = set()
    for match in MAKE_TARGET.finditer(makefile):
        targets.update(match.group(1).split())
    return targets


def test_every_make_target_in_the_readme_exists() -> None:
    mentioned = set(MAKE_MENTION.findall(_readme()))
    assert {"dev", "test"} <= mentioned, "the README must name `make dev` and `make test`"
    missing = sorted(mentioned - _make_targets())
    assert missing == [], f"README.md names make targets the Makefile lacks: {missing}"


def test_make_target_parser_sees_the_makefile() -> None:
    # Guards the test above against a parser that finds nothing and so never fails.
    assert {"dev", "test", "bench", "sandbox", "clean"} <= _make_targets()
    assert "nonexistent" not in _make_targets()


def test_local_links_in_the_readme_exist() -> None:
    links = LOCAL_LINK.findall(_readme())
    assert links, "expected links to docs/"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"
