"""The Chili Piper emulator's wire format and calendar semantics, spoken to with raw HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest

from config.settings import SANDBOX_CREDENTIAL
from sandbox.chilipiper import BUSINESS_DAYS_AHEAD, REP_TIMEZONE, parse_duration
from tests.servers import SandboxServer

AUTH = {"Authorization": f"Bearer {SANDBOX_CREDENTIAL}"}
GUEST = "riley.stone@fernhill.example"
FORM = {"firstName": "Riley", "lastName": "Stone"}


def edge(sandbox: SandboxServer, path: str) -> str:
    return f"{sandbox.url}/chilipiper/api/fire-edge{path}"


def init(sandbox: SandboxServer, **extra: Any) -> dict[str, Any]:
    body = {"link": {"slug": "pandadoc-trial-demo"}, "guestEmail": GUEST, **extra}
    response = httpx2.post(
        edge(sandbox, "/v1/org/schedulingLinks/init-simple"), json=body, headers=AUTH
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def schedule(sandbox: SandboxServer, route_id: str, start: str) -> httpx2.Response:
    return httpx2.post(
        edge(sandbox, f"/v1/org/schedulingLinks/routing/{route_id}/schedule-simple"),
        json={"startTime": start, "guestEmail": GUEST, "formData": FORM},
        headers=AUTH,
    )


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_init_offers_working_hours_slots_over_five_business_days(sandbox: SandboxServer) -> None:
    data = init(sandbox)

    assert set(data) >= {"routeId", "startTimes", "formFields", "meetingType"}
    assert data["meetingType"]["duration"] == "30 minutes"
    starts = [instant(s).astimezone(ZoneInfo(REP_TIMEZONE)) for s in data["startTimes"]]
    assert all(s.weekday() < 5 and 9 <= s.hour < 17 and s.minute in (0, 30) for s in starts)
    assert len({s.date() for s in starts}) in (BUSINESS_DAYS_AHEAD - 1, BUSINESS_DAYS_AHEAD)
    assert min(starts) > sandbox.clock()
    assert all(s.endswith("Z") for s in data["startTimes"])


def test_seeded_meetings_are_busy_time(sandbox: SandboxServer) -> None:
    seeded = sandbox.state()["chilipiper_meetings"]
    assert len(seeded) == 2
    starts = init(sandbox)["startTimes"]
    assert not {m["start_at"] for m in seeded} & set(starts)


def test_interval_limits_the_offered_slots(sandbox: SandboxServer) -> None:
    everything = init(sandbox)["startTimes"]
    first_day = instant(everything[0])
    narrow = init(
        sandbox,
        interval={"startsAt": everything[0], "duration": f"{2 * 3600 * 1000} milliseconds"},
    )["startTimes"]
    assert narrow == [s for s in everything if instant(s) < first_day + timedelta(hours=2)]
    assert 1 <= len(narrow) <= 4


def test_book_then_same_slot_is_a_409_and_the_slot_is_gone(sandbox: SandboxServer) -> None:
    first, second = init(sandbox), init(sandbox)
    slot = first["startTimes"][2]

    booked = schedule(sandbox, first["routeId"], slot)
    conflict = schedule(sandbox, second["routeId"], slot)

    assert booked.status_code == 200
    assert booked.json()["type"] == "Success" and booked.json()["meetingId"]
    assert conflict.status_code == 409
    assert conflict.json() == {
        "errorCode": "SlotNotAvailable",
        "errorMessage": "The selected start time is not available",
        "arguments": {"startTime": slot},
    }
    assert slot not in init(sandbox)["startTimes"]


def test_a_time_off_the_grid_is_not_bookable(sandbox: SandboxServer) -> None:
    data = init(sandbox)
    off_grid = (instant(data["startTimes"][0]) + timedelta(minutes=10)).isoformat()
    assert schedule(sandbox, data["routeId"], off_grid).status_code == 409


def test_bad_bodies_are_400_text_as_the_edge_api_answers(sandbox: SandboxServer) -> None:
    data = init(sandbox)
    missing_name = httpx2.post(
        edge(sandbox, f"/v1/org/schedulingLinks/routing/{data['routeId']}/schedule-simple"),
        json={"startTime": data["startTimes"][0], "guestEmail": GUEST, "formData": {}},
        headers=AUTH,
    )
    assert missing_name.status_code == 400
    assert missing_name.headers["content-type"].startswith("text/plain")
    assert missing_name.text == "Invalid value for: body"
    naive = schedule(sandbox, data["routeId"], "2030-01-07T15:00:00")
    assert naive.status_code == 400
    too_wide = httpx2.put(
        edge(sandbox, "/v2/org/meetings/meetings"),
        json={"start": "2030-01-01T00:00:00Z", "end": "2030-01-09T00:00:00Z"},
        headers=AUTH,
    )
    assert too_wide.status_code == 400


def test_missing_bearer_prefix_is_401(sandbox: SandboxServer) -> None:
    response = httpx2.post(
        edge(sandbox, "/v1/org/schedulingLinks/init-simple"),
        json={"link": {"slug": "pandadoc-trial-demo"}},
        headers={"Authorization": SANDBOX_CREDENTIAL},
    )
    assert response.status_code == 401
    assert response.json()["errorCode"] == "Unauthorized"


def test_unknown_link_is_404(sandbox: SandboxServer) -> None:
    response = httpx2.post(
        edge(sandbox, "/v1/org/schedulingLinks/init-simple"),
        json={"link": {"slug": "no-such-link"}},
        headers=AUTH,
    )
    assert response.status_code == 404
    assert response.json()["errorCode"] == "SchedulingLinkNotFound"


def test_meetings_query_filters_by_guest_and_paginates(sandbox: SandboxServer) -> None:
    for index in range(3):
        data = init(sandbox)
        assert schedule(sandbox, data["routeId"], data["startTimes"][index]).status_code == 200
    now = sandbox.clock()
    window = {
        "start": now.isoformat(),
        "end": (now + timedelta(days=7)).isoformat(),
        "guestEmail": GUEST.upper(),
        "pageSize": 2,
    }

    pages = [
        httpx2.put(
            edge(sandbox, "/v2/org/meetings/meetings"), json={**window, "page": page}, headers=AUTH
        ).json()
        for page in (0, 1)
    ]

    assert [len(p["data"]) for p in pages] == [2, 1]
    assert [p["hasMoreItems"] for p in pages] == [True, False]
    assert [p["hasMore"] for p in pages] == ["Yes", "No"]
    guests = {a["email"] for p in pages for m in p["data"] for a in m["attendees"] if "email" in a}
    assert guests == {GUEST}


def test_cancel_frees_the_slot_and_reset_restores_the_seed(sandbox: SandboxServer) -> None:
    data = init(sandbox)
    slot = data["startTimes"][0]
    meeting_id = schedule(sandbox, data["routeId"], slot).json()["meetingId"]
    assert slot not in init(sandbox)["startTimes"]

    cancel = httpx2.get(edge(sandbox, f"/v1/org/meetings/cancel/{meeting_id}"), headers=AUTH)
    assert cancel.json() == {"type": "Success"}
    assert slot in init(sandbox)["startTimes"]
    assert (
        httpx2.get(edge(sandbox, "/v1/org/meetings/cancel/not-a-uuid"), headers=AUTH).status_code
        == 400
    )

    sandbox.reset()
    state = sandbox.state()
    assert len(state["chilipiper_meetings"]) == 2
    assert state["chilipiper_routes"] == []
    assert len(state["chilipiper_links"]) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("604800000 milliseconds", timedelta(days=7)),
        ("30 minutes", timedelta(minutes=30)),
        ("2 days", timedelta(days=2)),
        ("soon", None),
        ("3 fortnights", None),
    ],
)
def test_durations_in_chili_piper_notation(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected
