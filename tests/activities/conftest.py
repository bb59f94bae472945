"""Fixtures the activity tests share: vendor clients on the sandbox, over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from integrations.clients import VendorClients
from tests.servers import SandboxServer
from tests.workflows.scenario import open_vendor_clients


@pytest.fixture
async def clients(sandbox: SandboxServer) -> AsyncIterator[VendorClients]:
    async with open_vendor_clients(sandbox) as opened:
        yield opened


@pytest.fixture
async def pinned_clients(pinned_sandbox: SandboxServer) -> AsyncIterator[VendorClients]:
    """Clients on the sandbox frozen at each calendar instant (tests/pinned_time.py)."""
    async with open_vendor_clients(pinned_sandbox) as opened:
        yield opened
