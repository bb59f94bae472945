"""Which delivery failures mean Temporal is unreachable (the relay waits as a whole) and which are
one message's trouble (it backs off alone), as handoff/relay.py's docstring says.

Found by bench/chaos.py: a delivery that timed out under load (TimeoutError is an OSError) made
the relay hold its whole pass and wait, so the outbox drained one slow message at a time.
"""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode

from config.temporal import TemporalConnectError
from handoff.messages import unreachable


def test_a_timeout_is_one_messages_trouble_not_temporal_down() -> None:
    assert not unreachable(TimeoutError())


def test_refused_connections_and_unavailable_servers_are_temporal_down() -> None:
    assert unreachable(ConnectionRefusedError("refused"))
    assert unreachable(RPCError("down", RPCStatusCode.UNAVAILABLE, b""))
    assert unreachable(
        TemporalConnectError(target="127.0.0.1:7233", attempts=1, cause=OSError("x"))
    )
    assert not unreachable(RPCError("bad", RPCStatusCode.INVALID_ARGUMENT, b""))
