"""The conversation state of one call, with snapshots and transactions that undo a failed tool."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from contracts.fields import fold_text
from contracts.models import (
    MAX_NOTE_CHARS,
    MAX_NOTES,
    NOTES_MAX_BYTES,
    BookingConfirmation,
    BookingRequest,
    CallbackWindow,
    QualificationSignals,
)

logger = logging.getLogger(__name__)

NAMED_SIGNALS: tuple[str, ...] = tuple(
    name for name in QualificationSignals.model_fields if name != "extras"
)
MAX_SIGNAL_VALUE_CHARS = 200
_SIGNAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}", re.ASCII)
# How much of a model's argument a refusal may quote back to it.
ECHO_CHARS = 40


class Stage(StrEnum):
    OPENING = "opening"
    DISCOVERY = "discovery"
    QUALIFYING = "qualifying"
    SCHEDULING = "scheduling"
    WRAP_UP = "wrap_up"


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """An immutable copy of the state; every field is immutable, so sharing it is safe."""

    stage: Stage
    signals: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]
    requested_meeting: BookingRequest | None
    booking: BookingConfirmation | None


Undo = Callable[[], None]


@dataclass(eq=False)
class _Journal:
    state: ConversationState
    undo: list[Undo] = field(default_factory=list)


# The transactions open in the current task. Each tool call runs in its own task (and context),
# so a failed tool undoes only its own changes, never those of a tool running beside it.
_OPEN_TRANSACTIONS: ContextVar[tuple[_Journal, ...]] = ContextVar(
    "trialist_state_transactions", default=()
)


class ConversationState:
    """What the call has learned so far. Change it only through its methods, which validate
    against the contracts' limits and let `transaction()` undo a failed tool's changes."""

    def __init__(
        self,
        *,
        stage: Stage = Stage.OPENING,
        signals: Mapping[str, str] | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        self._stage = Stage(stage)
        self._signals: dict[str, str] = {}
        self._notes: list[str] = []
        self._requested_meeting: BookingRequest | None = None
        self._booking: BookingConfirmation | None = None
        # Bumped on every change (and every undo), so checkpoints know when there is news.
        self._version = 0
        self._listeners: list[Callable[[], None]] = []
        # Outreach (issue 16): what the call decided about the next attempt.
        self._callback: CallbackWindow | None = None
        self._voicemail: tuple[bool, bool] = (False, False)  # (reached, message left)
        self._opted_out = False
        for name, value in (signals or {}).items():
            self.record_signal(name, value)
        for note in notes:
            self.add_note(note)

    # --- reading ---------------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def version(self) -> int:
        """How many changes the state has seen: a checkpoint's sequence number."""
        return self._version

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change, undone ones included."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._version += 1
        for listener in self._listeners:
            listener()

    @property
    def signals(self) -> dict[str, str]:
        """A copy of the signals recorded so far, by normalized name."""
        return dict(self._signals)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._notes)

    @property
    def requested_meeting(self) -> BookingRequest | None:
        return self._requested_meeting

    @property
    def booking(self) -> BookingConfirmation | None:
        return self._booking

    def qualification_signals(self) -> QualificationSignals:
        """The signals as the contracts' model: named fields first, the rest as extras."""
        return _to_qualification_signals(self._signals)

    def outcome_fields(self) -> dict[str, Any]:
        """The CallOutcome fields that come from the conversation: `CallOutcome(**fields, ...)`."""
        return {
            "signals": self.qualification_signals(),
            "notes": list(self._notes),
            "requested_meeting": self._requested_meeting,
            "booking": self._booking,
            # An opt-out cancels a callback the caller asked for earlier in the call.
            "callback": None if self._opted_out else self._callback,
            "voicemail": self._voicemail[0],
            "voicemail_message_left": self._voicemail[1],
        }

    # --- outreach (issue 16) ---------------------------------------------------------------
    @property
    def callback(self) -> CallbackWindow | None:
        return self._callback

    def request_callback(self, window: CallbackWindow) -> None:
        self._callback = window

    def mark_voicemail(self, *, message_left: bool) -> None:
        self._voicemail = (True, message_left)

    def mark_opted_out(self) -> None:
        self._opted_out = True

    # --- changing ----------------------------------------------------------------------------
    def set_stage(self, stage: Stage) -> None:
        new, old = Stage(stage), self._stage
        self._stage = new

        def undo() -> None:
            if self._stage is new:
                self._stage = old

        self._journal(undo)

    def record_signal(self, name: str, value: str | int) -> str:
        """Record one qualification signal; returns the normalized name. Raises ValueError."""
        key = _signal_name(name)
        text = fold_text(str(value))
        if not text:
            raise ValueError(f"signal {key!r} needs a value")
        if len(text) > MAX_SIGNAL_VALUE_CHARS:
            raise ValueError(f"signal {key!r} is longer than {MAX_SIGNAL_VALUE_CHARS} characters")
        _to_qualification_signals({**self._signals, key: text})  # validates team_size, limits
        old = self._signals.get(key)
        self._signals[key] = text

        def undo() -> None:
            if self._signals.get(key) != text:
                return
            if old is None:
                del self._signals[key]
            else:
                self._signals[key] = old

        self._journal(undo)
        return key

    def add_note(self, note: str) -> None:
        text = fold_text(note)
        if not text:
            raise ValueError("a note needs some text")
        if len(text) > MAX_NOTE_CHARS:
            raise ValueError(f"a note is limited to {MAX_NOTE_CHARS} characters")
        if len(self._notes) >= MAX_NOTES:
            raise ValueError(f"the call already has the maximum of {MAX_NOTES} notes")
        used = sum(len(kept.encode()) for kept in self._notes)
        if used + len(text.encode()) > NOTES_MAX_BYTES:
            raise ValueError("the call's notes are full; keep this one shorter or skip it")
        self._notes.append(text)

        def undo() -> None:
            for index in range(len(self._notes) - 1, -1, -1):
                if self._notes[index] == text:
                    del self._notes[index]
                    return

        self._journal(undo)

    def request_meeting(self, request: BookingRequest | None) -> None:
        old = self._requested_meeting
        self._requested_meeting = request

        def undo() -> None:
            if self._requested_meeting is request:
                self._requested_meeting = old

        self._journal(undo)

    def confirm_booking(self, confirmation: BookingConfirmation | None) -> None:
        old = self._booking
        self._booking = confirmation

        def undo() -> None:
            if self._booking is confirmation:
                self._booking = old

        self._journal(undo)

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            stage=self._stage,
            signals=tuple(self._signals.items()),
            notes=tuple(self._notes),
            requested_meeting=self._requested_meeting,
            booking=self._booking,
        )

    def restore(self, snapshot: StateSnapshot) -> None:
        """Put the whole state back as it was at `snapshot`."""
        before = self.snapshot()
        self._apply(snapshot)
        self._journal(lambda: self._apply(before))

    def transaction(self) -> StateTransaction:
        """`with`/`async with`: on an exception, undo what the block changed, then re-raise."""
        return StateTransaction(self)

    def _apply(self, snapshot: StateSnapshot) -> None:
        self._stage = snapshot.stage
        self._signals = dict(snapshot.signals)
        self._notes = list(snapshot.notes)
        self._requested_meeting = snapshot.requested_meeting
        self._booking = snapshot.booking

    def _journal(self, undo: Undo) -> None:
        self._changed()
        for journal in reversed(_OPEN_TRANSACTIONS.get()):
            if journal.state is self:
                journal.undo.append(undo)
                return

    def __repr__(self) -> str:
        # Counts only: signal values and notes can hold personal data.
        return (
            f"ConversationState(stage={self._stage.value}, signals={sorted(self._signals)}, "
            f"notes={len(self._notes)}, requested_meeting={self._requested_meeting is not None}, "
            f"booking={self._booking is not None})"
        )


class StateTransaction:
    """Undo log for one risky block: rolled back on any exception, merged outward on success."""

    def __init__(self, state: ConversationState) -> None:
        self._state = state
        self._journal: _Journal | None = None
        self._token: Token[tuple[_Journal, ...]] | None = None

    def __enter__(self) -> ConversationState:
        if self._journal is not None:
            raise RuntimeError("a StateTransaction cannot be entered twice")
        self._journal = _Journal(self._state)
        self._token = _OPEN_TRANSACTIONS.set((*_OPEN_TRANSACTIONS.get(), self._journal))
        return self._state

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._journal is not None and self._token is not None
        _OPEN_TRANSACTIONS.reset(self._token)
        changes = self._journal.undo
        if exc_type is None:
            for outer in reversed(_OPEN_TRANSACTIONS.get()):
                if outer.state is self._state:
                    outer.undo.extend(changes)  # the outer block may still fail
                    break
            return
        for undo in reversed(changes):
            undo()
        if changes:
            self._state._changed()
            logger.info(
                "conversation state: undid %d change(s) after %s", len(changes), exc_type.__name__
            )

    async def __aenter__(self) -> ConversationState:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _signal_name(name: str) -> str:
    key = re.sub(r"[\s-]+", "_", fold_text(name).lower())
    if not _SIGNAL_NAME.fullmatch(key):
        raise ValueError(
            f"signal name {echo(name)} must be 1-40 letters, digits or underscores, starting "
            f"with a letter; the usual ones are {', '.join(NAMED_SIGNALS)}"
        )
    return key


def echo(text: str, limit: int = ECHO_CHARS) -> str:
    """A model's argument quoted back to it: one line, bounded, so a huge one stays out."""
    folded = fold_text(text)
    return repr(folded if len(folded) <= limit else folded[: limit - 1] + "…")


def _to_qualification_signals(signals: Mapping[str, str]) -> QualificationSignals:
    named = {name: value for name, value in signals.items() if name in NAMED_SIGNALS}
    extras = {name: value for name, value in signals.items() if name not in NAMED_SIGNALS}
    try:
        return QualificationSignals.model_validate({**named, "extras": extras})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ValueError(f"invalid qualification signal ({problems})") from None
