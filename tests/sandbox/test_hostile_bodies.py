"""Property tests: hostile request bodies, headers and paths against every sandbox route, over HTTP.

Each case checks what a client of the vendor would see: never a 5xx; the vendor's refusal status
for a body it cannot read; the vendor's error shape; nothing stored by a refused request; and the
refused value nowhere in the sandbox's logs.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import SANDBOX_CREDENTIAL
from tests.pinned_time import working_week_anchor
from tests.sandbox import hostile_json
from tests.sandbox.conftest import FIGURES, SANDBOX_PROFILE
from tests.sandbox.refusals import (
    BEARER,
    EDGE,
    OBJECTS,
    SF_DATA,
    amplitude_profile_refusal,
    amplitude_refusal,
    chilipiper_refusal,
    control_refusal,
    hubspot_refusal,
    records,
    salesforce_refusal,
    salesforce_token,
)
from tests.servers import SandboxServer

ANCHOR = working_week_anchor(datetime.now(UTC))
MARKER = "MARKER"  # each case swaps it for a token of its own, then looks for it in the logs
_tokens = itertools.count()


class CapturedLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + (record.exc_text or ""))
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@dataclass
class Fuzzing:
    sandbox: SandboxServer
    client: httpx2.Client
    logs: CapturedLogs
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    route_id: str = ""


LOGGERS = ("", "sandbox", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")


@pytest.fixture(scope="module")
def fuzzing(sandbox_server: SandboxServer) -> Iterator[Fuzzing]:
    sandbox_server.reset(now=ANCHOR, frozen=True)
    logs = CapturedLogs()
    levels = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.addHandler(logs)
    logging.getLogger("sandbox").setLevel(logging.DEBUG)
    with httpx2.Client(base_url=sandbox_server.url, timeout=30) as client:
        run = Fuzzing(sandbox=sandbox_server, client=client, logs=logs)
        run.headers = {
            "bearer": dict(BEARER),
            "api-key": {"Authorization": f"Api-Key {SANDBOX_CREDENTIAL}"},
            "none": {},
        }
        _restore(run)
        yield run
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(logs)
        logging.getLogger(name).setLevel(levels[name])
    sandbox_server.reset()


def _restore(run: Fuzzing) -> None:
    """The module's starting point again: seed data at the anchor, a token, a booking session."""
    run.sandbox.reset(now=ANCHOR, frozen=True)
    token = salesforce_token(run.sandbox)
    run.headers["salesforce"] = {"Authorization": f"Bearer {token}"}
    init = run.client.post(
        f"{EDGE}/v1/org/schedulingLinks/init-simple",
        json={"link": {"slug": "pandadoc-trial-demo"}},
        headers=BEARER,
    )
    run.route_id = init.json()["routeId"]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    valid: Any
    refusal: Callable[..., Any]
    auth: str = "bearer"
    schema_title: str | None = None  # one branch of an anyOf body (Salesforce's sObjects)

    @property
    def refused_status(self) -> int:
        return 422 if self.refusal is control_refusal else 400

    @property
    def vendor(self) -> str:
        return self.path.strip("/").split("/")[0]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _engagement(kind: str, type_id: int, title: str) -> Route:
    association = {
        "to": {"id": "1001"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }
    return Route(
        f"hubspot {kind}",
        "POST",
        f"{OBJECTS}/{kind}",
        {
            "properties": {"hs_timestamp": "2026-03-03T15:00:00Z", title: f"Call {MARKER}"},
            "associations": [association],
        },
        hubspot_refusal,
    )


JSON_ROUTES = [
    Route(
        "salesforce upsert Lead",
        "PATCH",
        f"{SF_DATA}/Lead/Trial_Account_Id__c/trial-fuzz",
        {
            "FirstName": "Fuzz",
            "LastName": f"Tester {MARKER}",
            "Company": "Acme",
            "Email": "fuzz@acme.example",
            "Status": "Open - Not Contacted",
        },
        salesforce_refusal,
        auth="salesforce",
        schema_title="LeadFields",
    ),
    Route(
        "salesforce upsert Task",
        "PATCH",
        f"{SF_DATA}/Task/Voice_Call_Id__c/call-fuzz",
        {
            "Subject": f"Call {MARKER}",
            "Status": "Completed",
            "ActivityDate": "2026-03-03",
            "CallDurationInSeconds": 60,
            "CallType": "Outbound",
        },
        salesforce_refusal,
        auth="salesforce",
        schema_title="TaskFields",
    ),
    Route(
        "salesforce upsert Event",
        "PATCH",
        f"{SF_DATA}/Event/Voice_Meeting_Id__c/meeting-fuzz",
        {
            "Subject": f"Demo {MARKER}",
            "StartDateTime": "2026-03-03T15:00:00Z",
            "EndDateTime": "2026-03-03T15:30:00Z",
        },
        salesforce_refusal,
        auth="salesforce",
        schema_title="EventFields",
    ),
    Route(
        "hubspot batch upsert contacts",
        "POST",
        f"{OBJECTS}/contacts/batch/upsert",
        {
            "inputs": [
                {
                    "idProperty": "email",
                    "id": "fuzz@acme.example",
                    "properties": {"firstname": MARKER, "lifecyclestage": "lead"},
                }
            ]
        },
        hubspot_refusal,
    ),
    Route(
        "hubspot create contact",
        "POST",
        f"{OBJECTS}/contacts",
        {"properties": {"email": "fuzz2@acme.example", "firstname": MARKER, "company": "Acme"}},
        hubspot_refusal,
    ),
    _engagement("calls", 194, "hs_call_title"),
    _engagement("notes", 202, "hs_note_body"),
    _engagement("meetings", 200, "hs_meeting_title"),
    Route(
        "hubspot search",
        "POST",
        f"{OBJECTS}/contacts/search",
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": MARKER},
                        {"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead"]},
                    ]
                }
            ],
            "properties": ["email"],
            "limit": 10,
            "after": "0",
        },
        hubspot_refusal,
    ),
    Route(
        "chilipiper init-simple",
        "POST",
        f"{EDGE}/v1/org/schedulingLinks/init-simple",
        {
            "link": {"slug": "pandadoc-trial-demo"},
            "guestEmail": "fuzz@acme.example",
            "guestTimezone": "America/Chicago",
            "interval": {"startsAt": _iso(ANCHOR), "duration": "7 days"},
            "note": MARKER,
        },
        chilipiper_refusal,
    ),
    Route(
        "chilipiper schedule-simple",
        "POST",
        f"{EDGE}/v1/org/schedulingLinks/routing/ROUTE/schedule-simple",
        {
            "startTime": _iso(ANCHOR + timedelta(days=1, hours=2)),
            "guestEmail": "fuzz@acme.example",
            "guestTimezone": "America/Chicago",
            "formData": {"firstName": MARKER, "lastName": "Tester", "company": "Acme"},
        },
        chilipiper_refusal,
    ),
    Route(
        "chilipiper list meetings",
        "PUT",
        f"{EDGE}/v2/org/meetings/meetings",
        {
            "start": _iso(ANCHOR),
            "end": _iso(ANCHOR + timedelta(days=1)),
            "guestEmail": MARKER,
            "status": ["Active"],
            "page": 0,
            "pageSize": 10,
        },
        chilipiper_refusal,
    ),
    Route(
        "amplitude httpapi",
        "POST",
        "/amplitude/2/httpapi",
        {
            "api_key": SANDBOX_CREDENTIAL,
            "events": [
                {
                    "event_type": "call_ended",
                    "user_id": "trial-fuzz-1",
                    "time": 1_772_550_000_000,
                    "insert_id": "insert-1",
                    "session_id": 5,
                    "event_properties": {"outcome": MARKER},
                    "user_properties": {"$set": {"plan": "trial"}},
                }
            ],
            "options": {"min_id_length": 5},
        },
        amplitude_refusal,
        auth="none",
    ),
    Route(
        "control add fault",
        "POST",
        "/__sandbox/faults",
        {
            "vendor": "hubspot",
            "operation": f"no-such-operation-{MARKER}",
            "error_rate": 0.5,
            "status": 503,
            "headers": {"X-Fuzz": "1"},
            "rate_limit": {"limit": 5, "window_seconds": 1},
            "times": 1,
            "seed": 3,
        },
        control_refusal,
        auth="none",
    ),
    Route(
        "control clock",
        "POST",
        "/__sandbox/clock",
        {"shift_seconds": 60, "frozen": True},
        control_refusal,
        auth="none",
    ),
    Route(
        "control reset",
        "POST",
        "/__sandbox/reset",
        {"seed": 7, "now": _iso(ANCHOR), "frozen": True},
        control_refusal,
        auth="none",
    ),
    Route(
        "control amplitude limits",
        "PUT",
        "/amplitude/__sandbox/limits",
        {"max_events_per_request": 2000, "max_payload_bytes": 1_000_000, "min_id_length": 5},
        control_refusal,
        auth="none",
    ),
]
IDS = [route.name for route in JSON_ROUTES]


def _schema(fuzzing: Fuzzing, route: Route) -> dict[str, Any]:
    """The route's request body schema, from the sandbox's own OpenAPI document."""
    spec = fuzzing.sandbox.app.openapi()
    template = next(
        path
        for path, operations in spec["paths"].items()
        if _matches_template(path, route.path) and route.method.lower() in operations
    )
    operation = spec["paths"][template][route.method.lower()]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    schema = _inline(schema, spec.get("components", {}).get("schemas", {}))
    if route.schema_title is not None:
        schema = next(b for b in schema["anyOf"] if b.get("title") == route.schema_title)
    return schema


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {key: _inline(value, components) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, components) for item in node]
    return node


def _matches_template(template: str, path: str) -> bool:
    parts, actual = template.strip("/").split("/"), path.strip("/").split("/")
    return len(parts) == len(actual) and all(
        p == a or (p.startswith("{") and p.endswith("}"))
        for p, a in zip(parts, actual, strict=True)
    )


# --- one case ------------------------------------------------------------------------------


def _state(fuzzing: Fuzzing) -> Any:
    """Records, faults and the clock, read in-process: cheaper than three control calls."""
    sandbox = fuzzing.sandbox.app.state.sandbox
    clock = sandbox.clock.reading()
    # Frozen in this module: `now` stands still while the offset from the wall clock grows.
    return records(fuzzing.sandbox), sandbox.faults.list(), (clock.mode, clock.now)


def _send(
    fuzzing: Fuzzing,
    route: Route,
    raw: bytes,
    *,
    surface: str,
    must_refuse: bool,
    headers: dict[str, str | bytes] | None = None,
    path: str | None = None,
) -> httpx2.Response:
    token = f"zq{next(_tokens):07d}k"
    raw = raw.replace(MARKER.encode(), token.encode())
    sent_headers: dict[str, str | bytes] = {
        **fuzzing.headers[route.auth],
        "Content-Type": "application/json",
    }
    sent_headers.update(headers or {})
    before = _state(fuzzing)
    seen_logs = len(fuzzing.logs.lines)
    target = (path or route.path).replace("ROUTE", fuzzing.route_id)
    response = fuzzing.client.request(route.method, target, content=raw, headers=sent_headers)
    refused = 400 <= response.status_code < 500
    outcome = "crashed" if response.status_code >= 500 else "refused" if refused else "accepted"
    FIGURES[(f"{route.name}: {surface}", outcome)] += 1
    assert response.status_code < 500, (response.status_code, response.text[:300], raw[:300])
    new_logs = "\n".join(fuzzing.logs.lines[seen_logs:])
    assert token not in new_logs, new_logs[:500]
    if must_refuse:
        assert refused, (response.status_code, response.text[:300], raw[:300])
    if refused:
        route.refusal(response)
        assert _state(fuzzing) == before, raw[:300]
    if route.refusal is control_refusal and not refused:
        _restore(fuzzing)  # an accepted control call moved the clock, reset or set a fault
    return response


def _locations(route: Route) -> list[hostile_json.Path]:
    return list(hostile_json.locations(route.valid))


# --- bodies --------------------------------------------------------------------------------


def drawn_for_every_json_route(test: Callable[..., None]) -> Callable[..., None]:
    """A hypothesis property drawing as it goes (`data`), in the sandbox profile, per JSON route."""
    drawn = SANDBOX_PROFILE(given(data=st.data())(test))
    return pytest.mark.parametrize("route", JSON_ROUTES, ids=IDS)(drawn)


@drawn_for_every_json_route
def test_unreadable_json_gets_the_vendors_refusal(
    fuzzing: Fuzzing, route: Route, data: st.DataObject
) -> None:
    """NaN, Infinity, overflow, lone surrogates, deep nesting, bad UTF-8 anywhere in the body."""
    path = data.draw(st.sampled_from(_locations(route)), label="location")
    fragment = data.draw(hostile_json.RAW_FRAGMENTS, label="fragment")
    raw = hostile_json.with_raw_fragment(route.valid, path, fragment)
    response = _send(fuzzing, route, raw, surface="unreadable JSON", must_refuse=True)
    assert response.status_code == route.refused_status, response.text[:300]


@drawn_for_every_json_route
def test_wrongly_typed_values_get_the_vendors_refusal(
    fuzzing: Fuzzing, route: Route, data: st.DataObject
) -> None:
    """A value of a JSON type the route's OpenAPI schema forbids, at any depth."""
    slots = list(hostile_json.typed_slots(route.valid, _schema(fuzzing, route)))
    slot = data.draw(st.sampled_from(slots), label="slot")
    value = data.draw(hostile_json.wrong_value(slot), label="value")
    raw = json.dumps(hostile_json.replaced(route.valid, slot.path, value)).encode()
    response = _send(fuzzing, route, raw, surface="wrong types", must_refuse=True)
    assert response.status_code == route.refused_status, response.text[:300]


@drawn_for_every_json_route
def test_any_json_anywhere_is_never_a_server_error(
    fuzzing: Fuzzing, route: Route, data: st.DataObject
) -> None:
    """Any JSON value (odd text, huge numbers, nesting) at any location, or as the whole body."""
    path = data.draw(st.sampled_from(_locations(route)), label="location")
    value = data.draw(hostile_json.JSON_VALUES, label="value")
    body = hostile_json.replaced(route.valid, path, value)
    raw = json.dumps(body).encode()
    _send(fuzzing, route, raw, surface="any JSON", must_refuse=False)


NON_JSON_MEDIA = ["text/plain", "application/xml", "multipart/form-data; boundary=x", "text/html"]
JSON_MEDIA = ["application/json; charset=utf-8", "application/vnd.api+json"]


@pytest.mark.parametrize("route", JSON_ROUTES, ids=IDS)
@SANDBOX_PROFILE
@given(
    media=st.sampled_from([*NON_JSON_MEDIA, *JSON_MEDIA]),
    body=st.sampled_from(["valid", "empty", "blank"]),
)
def test_content_types_and_empty_bodies(
    fuzzing: Fuzzing, route: Route, media: str, body: str
) -> None:
    """A vendor answers a non-JSON media type with 415 (Amplitude reads the bytes) and refuses
    an empty body; the control API answers both with 422."""
    raw = {"valid": json.dumps(route.valid).encode(), "empty": b"", "blank": b" \n"}[body]
    control = route.refused_status == 422
    non_json = media in NON_JSON_MEDIA
    reads_any_media = route.vendor == "amplitude" and not control
    # A reset without a body is the documented plain reset.
    plain_reset = route.name == "control reset" and body == "empty"
    response = _send(
        fuzzing,
        route,
        raw,
        surface="content types and empty bodies",
        must_refuse=(body != "valid" or (non_json and not reads_any_media)) and not plain_reset,
        headers={"Content-Type": media},
    )
    if non_json and not control and not reads_any_media:
        assert response.status_code == 415, response.text[:200]


# --- headers, paths and queries ------------------------------------------------------------

ODD_SEGMENT = st.text(min_size=1, max_size=40) | st.sampled_from(
    ["²", "١٠٠١", "9" * 40, "-1", "00Q5g0000000001AAA\n", "..", "%00", "\x00", "trial-1001"]
)
# What HTTP/1.1 lets a client send in a header value: visible ASCII, obs-text, inner spaces.
_HEADER_BYTES = st.integers(0x20, 0xFF).filter(lambda byte: byte != 0x7F)
ODD_HEADER = st.builds(
    lambda scheme, value: (scheme + bytes(value)).strip(),
    st.sampled_from([b"", b"Bearer ", b"Basic ", b"Api-Key ", b"OAuth "]),
    st.lists(_HEADER_BYTES, max_size=60),
)


def _get_route(name: str, path: str, refusal: Callable[..., Any], auth: str) -> Route:
    return Route(name, "GET", path, None, refusal, auth=auth)


PATH_ROUTES = [
    (
        _get_route(
            "salesforce get record", f"{SF_DATA}/Lead/SEG", salesforce_refusal, "salesforce"
        ),
        None,
    ),
    (
        _get_route(
            "salesforce get by external id",
            f"{SF_DATA}/Lead/Trial_Account_Id__c/SEG",
            salesforce_refusal,
            "salesforce",
        ),
        None,
    ),
    (
        _get_route("hubspot get object", f"{OBJECTS}/contacts/SEG", hubspot_refusal, "bearer"),
        "hubspot",
    ),
    (
        _get_route(
            "chilipiper cancel", f"{EDGE}/v1/org/meetings/cancel/SEG", chilipiper_refusal, "bearer"
        ),
        None,
    ),
    (
        _get_route(
            "amplitude user profile",
            "/amplitude/v1/userprofile",
            amplitude_profile_refusal,
            "api-key",
        ),
        "amplitude",
    ),
]


@pytest.mark.parametrize(("route", "query_kind"), PATH_ROUTES, ids=[r.name for r, _ in PATH_ROUTES])
@SANDBOX_PROFILE
@given(
    segment=ODD_SEGMENT,
    query=st.dictionaries(
        st.sampled_from(
            ["properties", "associations", "idProperty", "user_id", "device_id", "get_amp_props"]
        ),
        ODD_SEGMENT,
        max_size=3,
    ),
    authorization=st.none() | ODD_HEADER,
)
def test_odd_paths_queries_and_credentials(
    fuzzing: Fuzzing,
    route: Route,
    query_kind: str | None,
    segment: str,
    query: dict[str, str],
    authorization: bytes | None,
) -> None:
    """Any path segment, query value or Authorization header: an answer in the vendor's shape."""
    path = route.path.replace("SEG", quote(segment, safe=""))
    if query_kind is not None and query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    headers: dict[str, str | bytes] = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    _send(
        fuzzing,
        route,
        b"",
        surface="paths, queries, credentials",
        must_refuse=False,
        headers=headers,
        path=path,
    )
