"""Outreach activities: CRM do-not-call reads and writes, the dial, the agent dispatch, slots."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy

from activities.errors import current_attempt, vendor_failures
from activities.follow_up import SALESFORCE_FIRST_NAME_MAX, SALESFORCE_LAST_NAME_MAX
from contracts.names import (
    ACQUIRE_SLOT_SIGNAL,
    CHECK_CONTACT_ACTIVITY,
    DIAL_SLOTS_WORKFLOW_TYPE,
    DISPATCH_AGENT_ACTIVITY,
    PLACE_DIAL_ACTIVITY,
    REQUEST_SLOT_ACTIVITY,
    UPDATE_CRM_ACTIVITY,
    dial_slots_workflow_id,
)
from contracts.outreach import (
    ContactFlags,
    ContactFlagsInput,
    CrmOutreachUpdate,
    CrmOutreachUpdateOutput,
    DialResultKind,
    DispatchAgentInput,
    DispatchAgentOutput,
    PlaceDialInput,
    PlaceDialOutput,
    SlotRequest,
)
from integrations.errors import AmbiguousOutcomeError
from integrations.hubspot import HubSpotContact
from integrations.livekit import AgentDispatchRequest, DialStatus, LiveKitClient, OutboundCall
from integrations.salesforce import SalesforceLead

if TYPE_CHECKING:
    from integrations.clients import VendorClients

logger = logging.getLogger(__name__)

_DIAL_RESULTS = {
    DialStatus.ANSWERED: DialResultKind.ANSWERED,
    DialStatus.NO_ANSWER: DialResultKind.NO_ANSWER,
    DialStatus.BUSY: DialResultKind.BUSY,
    DialStatus.FAILED: DialResultKind.FAILED,
}


class OutreachActivities:
    """Activities of OutreachWorkflow over injected clients; registered bound."""

    def __init__(self, *, clients: VendorClients, livekit: LiveKitClient, task_queue: str) -> None:
        self._clients = clients
        self._livekit = livekit
        self._task_queue = task_queue

    def activity_methods(self) -> list[Any]:
        return [
            self.check_contact,
            self.place_dial,
            self.dispatch_agent,
            self.update_crm,
            self.request_dial_slot,
        ]

    @activity.defn(name=CHECK_CONTACT_ACTIVITY)
    async def check_contact(self, input: ContactFlagsInput) -> ContactFlags:
        """The CRMs' do-not-call flags and conversion: the internal do-not-call list."""
        with vendor_failures():
            lead = await self._clients.salesforce.get_lead_flags(input.trial_account_id)
            contact = await self._clients.hubspot.get_contact_flags(input.email)
        salesforce_dnc = lead is not None and lead.do_not_call
        hubspot_dnc = contact is not None and contact.do_not_call
        converted = lead is not None and lead.converted
        sources = [
            name
            for name, flagged in (
                ("Salesforce Lead DoNotCall", salesforce_dnc),
                ("HubSpot contact do_not_call", hubspot_dnc),
                ("Salesforce Lead status Closed - Converted", converted),
            )
            if flagged
        ]
        return ContactFlags(
            do_not_call=salesforce_dnc or hubspot_dnc, converted=converted, sources=sources
        )

    @activity.defn(name=PLACE_DIAL_ACTIVITY)
    async def place_dial(self, input: PlaceDialInput) -> PlaceDialOutput:
        """Ring the trialist once. Never retried once it may have rung: an unknown result is
        returned as a failed, ambiguous attempt (it counts against the caps)."""
        call = OutboundCall(
            room_name=input.room_name,
            participant_identity=f"trialist-{input.call_id}",
            to_number=input.to_number,
            from_number=input.from_number,
            trunk_id=input.trunk_id,
            max_call_duration_seconds=input.max_call_duration_seconds,
        )
        try:
            with vendor_failures():  # a request that never left is retried by Temporal
                try:
                    result = await self._livekit.dial(call)
                except AmbiguousOutcomeError as error:
                    logger.warning("call %s: dial result unknown: %s", input.call_id, error.message)
                    return PlaceDialOutput(
                        result=DialResultKind.FAILED, ambiguous=True, note=error.message[:300]
                    )
        finally:
            logger.info("call %s: dial attempt %d done", input.call_id, current_attempt())
        return PlaceDialOutput(
            result=_DIAL_RESULTS[result.status], sip_status_code=result.sip_status_code
        )

    @activity.defn(name=DISPATCH_AGENT_ACTIVITY)
    async def dispatch_agent(self, input: DispatchAgentInput) -> DispatchAgentOutput:
        """Send the agent into the answered call's room; a retry finds the first dispatch."""
        with vendor_failures():
            dispatch_id = await self._livekit.dispatch_agent(
                AgentDispatchRequest(
                    room_name=input.room_name, agent_name=input.agent_name, metadata=input.metadata
                )
            )
        logger.info("call %s: agent dispatched", input.call_id)
        return DispatchAgentOutput(dispatch_id=dispatch_id)

    @activity.defn(name=UPDATE_CRM_ACTIVITY)
    async def update_crm(self, input: CrmOutreachUpdate) -> CrmOutreachUpdateOutput:
        """Write do-not-call flags and/or the outreach's final state to both CRMs (upserts)."""
        person = input.trialist
        with vendor_failures():
            lead = await self._clients.salesforce.upsert_lead(
                SalesforceLead(
                    trial_account_id=person.trial_account_id,
                    first_name=person.first_name[:SALESFORCE_FIRST_NAME_MAX],
                    last_name=person.last_name[:SALESFORCE_LAST_NAME_MAX],
                    email=person.email,
                    company=person.company,
                    phone=person.phone,
                    do_not_call=input.do_not_call,
                    email_opt_out=input.email_opt_out,
                    outreach_status=input.outreach_status,
                )
            )
            contact = await self._clients.hubspot.upsert_contact(
                HubSpotContact(
                    email=person.email,
                    first_name=person.first_name,
                    last_name=person.last_name,
                    company=person.company,
                    phone=person.phone,
                    trial_account_id=person.trial_account_id,
                    do_not_call=input.do_not_call,
                    email_opt_out=input.email_opt_out,
                    outreach_status=input.outreach_status,
                )
            )
        logger.info("outreach CRM update written (%s)", input.outreach_status or "flags")
        return CrmOutreachUpdateOutput(salesforce_lead_id=lead.id, hubspot_contact_id=contact.id)

    @activity.defn(name=REQUEST_SLOT_ACTIVITY)
    async def request_dial_slot(self, input: SlotRequest) -> None:
        """Signal-with-start the dial-slot holder; it grants by signalling the outreach back."""
        await activity.client().start_workflow(
            DIAL_SLOTS_WORKFLOW_TYPE,
            id=dial_slots_workflow_id(self._task_queue),
            task_queue=self._task_queue,
            start_signal=ACQUIRE_SLOT_SIGNAL,
            start_signal_args=[input],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
