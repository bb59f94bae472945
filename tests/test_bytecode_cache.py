"""The worker writes its workflow modules' bytecode cache, which the sandbox re-reads per run.

Temporal's sandbox imports a workflow's module afresh for every workflow run. With
PYTHONDONTWRITEBYTECODE=1 (our image, this machine) and no `.pyc`, every run compiled the source
again; `cache_workflow_bytecode` writes the cache once at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.temporal import cache_workflow_bytecode
from workflows.follow_up import CallFollowUpWorkflow

WORKFLOW_SOURCE = """
from temporalio import workflow


@workflow.defn
class TinyWorkflow:
    @workflow.run
    async def run(self) -> str:
        return "done"
"""


@pytest.fixture
def tiny_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package `tinywf` with one workflow module, imported without writing bytecode."""
    package = tmp_path / "tinywf"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flow.py").write_text(WORKFLOW_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    importlib.invalidate_caches()
    yield package
    for name in ("tinywf.flow", "tinywf"):
        sys.modules.pop(name, None)


def _cached(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def test_writes_the_cache_of_the_workflow_module_and_its_package(tiny_package: Path) -> None:
    module = importlib.import_module("tinywf.flow")
    assert not _cached(tiny_package / "flow.py").exists()  # the import itself wrote nothing

    assert cache_workflow_bytecode([module.TinyWorkflow]) == []

    assert _cached(tiny_package / "flow.py").is_file()
    assert _cached(tiny_package / "__init__.py").is_file()
    # The next import (what the sandbox does per run) loads the cache instead of compiling.
    spec = importlib.util.find_spec("tinywf.flow")
    assert spec is not None and spec.cached == str(_cached(tiny_package / "flow.py"))


def test_unwritable_cache_is_reported_not_raised(
    tiny_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = importlib.import_module("tinywf.flow")
    # A file where the cache directory should be: no .pyc can be written, even by root.
    (tiny_package / "__pycache__").write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="config.temporal"):
        failed = cache_workflow_bytecode([module.TinyWorkflow])
    assert set(failed) == {tiny_package / "__init__.py", tiny_package / "flow.py"}
    assert "could not write the bytecode cache" in caplog.text
    assert "compileall" in caplog.text


def test_build_worker_caches_the_follow_up_workflow() -> None:
    # build_worker calls this; the repo's own workflow module must be cacheable.
    assert cache_workflow_bytecode([CallFollowUpWorkflow]) == []
    source = Path(sys.modules[CallFollowUpWorkflow.__module__].__file__ or "")
    assert _cached(source).is_file()
    # The modules beside it that it imports are re-imported by the sandbox too.
    for sibling in ("follow_up_steps", "follow_up_details", "step_errors"):
        assert _cached(source.with_name(f"{sibling}.py")).is_file(), sibling
