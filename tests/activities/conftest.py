"""Fixtures the activity tests share: vendor clients on the sandbox, over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from integrations.clients import VendorClients
from tests.servers import SandboxServer
from tests.workflows.scenario import vendor_clients


@pytest.fixture
async def clients(sandbox: SandboxServer) -> AsyncIterator[VendorClients]:
    built = vendor_clients(sandbox)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def pinned_clients(pinned_sandbox: SandboxServer) -> AsyncIterator[VendorClients]:
    """Clients on the sandbox frozen at each calendar instant (tests/pinned_time.py)."""
    built = vendor_clients(pinned_sandbox)
    try:
        yield built
    finally:
        await built.aclose()
