"""The handoff's rules, once each: the order of a call's messages, and the time each may take.

Every other module of the handoff asks here: the outbox's SQL, the relay's per-call sequencing,
the flush of a call's queued messages before its call_ended, and the handoff's timeouts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class MessageKind(StrEnum):
    OPT_OUT = "opt_out"
    BOOK_MEETING = "book_meeting"
    CHECKPOINT = "checkpoint"
    CALL_ENDED = "call_ended"


# A call's messages reach its workflow in this order. An opt-out goes first: no dial may follow
# it (it goes to the trialist's outreach, not the follow-up). A booking goes before the call's
# call_ended because the workflow refuses book_meeting once the call has ended (the outcome's
# requested_meeting covers a booking that is late anyway); a checkpoint goes before call_ended
# because after the outcome it says nothing new.
DELIVERY_ORDER: Final = (
    MessageKind.OPT_OUT,
    MessageKind.BOOK_MEETING,
    MessageKind.CHECKPOINT,
    MessageKind.CALL_ENDED,
)
# After this many failed attempts of an earlier message, the later ones no longer wait for it:
# the outcome carries everything a booking or a checkpoint would have said.
MAX_HOLD_ATTEMPTS: Final = 5


def rank(kind: MessageKind) -> int:
    """A message's place in its call's order: lower goes first."""
    return DELIVERY_ORDER.index(kind)


def goes_before(earlier: MessageKind, later: MessageKind) -> bool:
    return rank(earlier) < rank(later)


def sql_rank(column: str) -> str:
    """`rank` as an SQL expression over a kind column, for the outbox's queries."""
    cases = " ".join(f"WHEN '{kind.value}' THEN {rank(kind)}" for kind in DELIVERY_ORDER)
    return f"(CASE {column} {cases} END)"


# --- budgets (seconds) ---------------------------------------------------------------------------

# In the call, a tool is waiting on it: HANDOFF_TIMEOUT_SECONDS (a setting) bounds a booking's
# acceptance and a checkpoint's send; slower means the outbox.
# At the end of the call (LiveKit's on_session_end, whose own budget is far longer), each kind of
# message gets its own budget, so a slow resend of a queued booking never pushes a healthy
# call_ended into the outbox.
BOOKING_RESEND_SECONDS: Final = 2.0
CHECKPOINT_RESEND_SECONDS: Final = 1.0
# A refused update comes back with its outcome already known; this is how long we look for one.
REFUSAL_PROBE_SECONDS: Final = 0.05
# The relay: one delivery's limit, how many go at once, and how many it claims per pass.
DELIVERY_TIMEOUT_SECONDS: Final = 5.0
RELAY_CONCURRENCY: Final = 16
RELAY_BATCH_SIZE: Final = 200
# While Temporal is unreachable the relay waits as a whole, from this up to the maximum: it must
# notice Temporal's return within seconds, and one probe per process every few seconds is cheap.
UNREACHABLE_BACKOFF_SECONDS: Final = 0.5
MAX_UNREACHABLE_BACKOFF_SECONDS: Final = 4.0
