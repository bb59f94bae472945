"""Fixtures the vendor-client tests share: the pooled httpx2 client the clients run on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from integrations.http import build_http_client


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    """A fresh pooled client per test, built as production builds it."""
    async with build_http_client(read_timeout=5.0) as client:
        yield client
