"""Fixtures the vendor-client tests share: the pooled httpx client the clients run on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from integrations.http import build_http_client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A fresh pooled client per test, built as production builds it."""
    async with build_http_client(read_timeout=5.0) as client:
        yield client
