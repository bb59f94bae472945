"""The four vendor clients, built from settings over one pooled HTTP client."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
from pydantic import SecretStr

from config.clock import Clock, system_clock
from config.settings import Settings
from integrations.amplitude import AmplitudeClient
from integrations.chilipiper import ChiliPiperClient
from integrations.http import build_http_client
from integrations.hubspot import HubSpotClient
from integrations.salesforce import SalesforceClient


@dataclass(frozen=True, kw_only=True)
class VendorClients:
    http: httpx2.AsyncClient
    salesforce: SalesforceClient
    hubspot: HubSpotClient
    chilipiper: ChiliPiperClient
    amplitude: AmplitudeClient

    async def aclose(self) -> None:
        await self.http.aclose()


def build_vendor_clients(
    settings: Settings, *, http: httpx2.AsyncClient | None = None, clock: Clock = system_clock
) -> VendorClients:
    """Clients for every vendor; each one talks to its real API when its base URL is set.

    `clock` is where calendar searches start (free slots, a guest's meetings).
    """
    http = http or build_http_client(
        connect_timeout=settings.http_connect_timeout_seconds,
        read_timeout=settings.http_read_timeout_seconds,
    )
    return VendorClients(
        http=http,
        salesforce=SalesforceClient(
            http=http,
            base_url=settings.vendor_base_url("salesforce"),
            client_id=settings.salesforce_client_id or "sandbox-client",
            client_secret=SecretStr(settings.secret("salesforce_client_secret")),
            api_version=settings.salesforce_api_version,
            lead_external_id_field=settings.salesforce_lead_external_id_field,
            task_external_id_field=settings.salesforce_task_external_id_field,
            event_external_id_field=settings.salesforce_event_external_id_field,
        ),
        hubspot=HubSpotClient(
            http=http,
            base_url=settings.vendor_base_url("hubspot"),
            access_token=SecretStr(settings.secret("hubspot_access_token")),
        ),
        chilipiper=ChiliPiperClient(
            http=http,
            base_url=settings.vendor_base_url("chilipiper"),
            api_token=SecretStr(settings.secret("chilipiper_api_token")),
            scheduling_link=settings.chilipiper_scheduling_link,
            clock=clock,
        ),
        amplitude=AmplitudeClient(
            http=http,
            base_url=settings.vendor_base_url("amplitude"),
            profile_base_url=settings.amplitude_profile_url(),
            api_key=SecretStr(settings.secret("amplitude_api_key")),
            secret_key=SecretStr(settings.secret("amplitude_secret_key")),
        ),
    )
