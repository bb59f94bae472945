"""The layout's dependency rules (docs/architecture.md, "Layout"), checked on the source.

A folder says which path a change belongs to only while the imports keep pointing one way. Each
rule here fails on the import that breaks it, with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "agent",
    "handoff",
    "workflows",
    "activities",
    "integrations",
    "contracts",
    "sandbox",
    "config",
    "operators",
    "devtools",
)
OURS = set(PACKAGES) | {"worker", "bench", "tests", "scripts"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every first-party module `path` imports, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# What the packages that run things (operators, devtools) may import of ours besides each other.
RUNNERS_MAY_IMPORT = {
    "config",
    "contracts",
    "handoff",
    "integrations",
    "workflows",
    "activities",
    "worker",
    "sandbox",
}
# What each package may import of ours. Absent from a list: forbidden.
ALLOWED: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "integrations": {"integrations", "contracts", "config"},
    "handoff": {"handoff", "contracts", "config"},
    "activities": {"activities", "integrations", "contracts", "config"},
    "workflows": {"workflows", "contracts", "activities"},
    "agent": {"agent", "handoff", "integrations", "contracts", "config"},
    "sandbox": {"sandbox", "contracts", "config"},
    "config": {"config", "contracts"},
    # Operators and devtools run things; they may start any process but never import the agent
    # (devtools runs it as a child process).
    "operators": {"operators", "devtools", *RUNNERS_MAY_IMPORT},
    "devtools": {"devtools", "operators", *RUNNERS_MAY_IMPORT},
}

# The devtools modules that drive the real agent through the scripted LLM. They run inside the
# agent's own process (`python -m agent demo`), never inside the worker, the CLI or the sandbox.
DEVTOOLS_AGENT_RUNNERS = {
    "demo_calls.py",
    "dispatch_runner.py",
    "scripted_llm.py",
    "outreach_demo.py",
}
# The one way back: the agent's command line dispatches its `demo` subcommand to them, lazily.
AGENT_CLI = ROOT / "agent" / "__main__.py"
# The seeded people: pure data over contracts, the one source for the sandbox's seed, the
# console's caller, the demo and the tests.
SEEDED_PEOPLE = "devtools.people"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    wrong = []
    for path in _sources(package):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED[package] or name == SEEDED_PEOPLE:
                continue
            if package == "devtools" and top == "agent" and path.name in DEVTOOLS_AGENT_RUNNERS:
                continue
            if path == AGENT_CLI and name in {f"devtools.{m[:-3]}" for m in DEVTOOLS_AGENT_RUNNERS}:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_agent_imports_it() -> None:
    wrong = []
    for path in [*ROOT.glob("*.py"), *(p for pkg in PACKAGES for p in _sources(pkg))]:
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "agent" or (
            rel.parts[0] == "devtools" and path.name in DEVTOOLS_AGENT_RUNNERS
        ):
            continue
        wrong += [
            f"{rel}:{line} imports {name}"
            for line, name in _imports(path)
            if name.split(".")[0] == "agent"
        ]
    assert not wrong, "\n".join(wrong)


def test_workflow_imports_of_ours_are_passed_through() -> None:
    """A first-party import in workflows/ sits inside `workflow.unsafe.imports_passed_through()`
    (or is another workflow module, which the sandbox re-imports on purpose)."""
    wrong = []
    for path in _sources("workflows"):
        tree = ast.parse(path.read_text())
        passed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                "imports_passed_through" in ast.unparse(item.context_expr) for item in node.items
            ):
                passed.update(n.lineno for n in ast.walk(node) if hasattr(n, "lineno"))
        for line, name in _imports(path):
            if name.split(".")[0] != "workflows" and line not in passed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} unguarded")
    assert not wrong, "\n".join(wrong)


def test_the_seeded_people_import_nothing_but_contracts() -> None:
    path = ROOT / "devtools" / "people.py"
    assert {name.split(".")[0] for _, name in _imports(path)} == {"contracts"}


def test_every_package_is_covered_by_a_rule() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk <= set(ALLOWED), on_disk - set(ALLOWED)
