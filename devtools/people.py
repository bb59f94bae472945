"""The seeded people: one source for the sandbox's seed, the console, the demo calls and the tests.

Made-up people at `.example` addresses. The sandbox seeds them into its emulated vendors (Dana is
already a Salesforce Lead and a HubSpot contact; each of the three has an Amplitude trial
profile; Jamie is the Salesforce duplicate pair), the console talks as Priya, the demo calls ring
all three, and the tests import them from here. Pure data over `contracts`: the sandbox and the
agent's console may import it without pulling in any dev tooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from contracts.models import Trialist


@dataclass(frozen=True, kw_only=True)
class SeededPerson:
    trialist: Trialist
    first_name: str
    last_name: str


def _person(
    first: str, last: str, *, email: str, company: str, trial: str, timezone: str
) -> SeededPerson:
    return SeededPerson(
        trialist=Trialist(
            email=email,
            name=f"{first} {last}",
            company=company,
            trial_account_id=trial,
            timezone=timezone,
        ),
        first_name=first,
        last_name=last,
    )


# A power user, already known to both CRMs (her first upserts are updates).
DANA_WHITFIELD: Final = _person(
    "Dana",
    "Whitfield",
    email="dana.whitfield@northwind-legal.example",
    company="Northwind Legal",
    trial="trial-1001",
    timezone="America/New_York",
)
# Signed up, opened the editor once, never sent anything.
MARCO_RUIZ: Final = _person(
    "Marco",
    "Ruiz",
    email="marco.ruiz@brightpath.example",
    company="Brightpath",
    trial="trial-1002",
    timezone="America/Chicago",
)
# In between: a few documents, one template, tried e-signature. The console talks as her.
PRIYA_NATARAJAN: Final = _person(
    "Priya",
    "Natarajan",
    email="priya.natarajan@lumen-studio.example",
    company="Lumen Studio",
    trial="trial-1003",
    timezone="America/Los_Angeles",
)

DANA: Final = DANA_WHITFIELD.trialist
MARCO: Final = MARCO_RUIZ.trialist
PRIYA: Final = PRIYA_NATARAJAN.trialist
CONSOLE_TRIALIST: Final = PRIYA

# Salesforce's duplicate pair: two Leads share one trial account id, so an upsert by it answers
# 300 Multiple Choices.
DUPLICATE_LEAD_EMAIL: Final = "jamie@okafor-design.example"
DUPLICATE_LEAD_COMPANY: Final = "Okafor Design"
DUPLICATE_LEAD_NAMES: Final = (("Jamie", "Okafor"), ("Jamie", "Okafor-Reyes"))
DUPLICATE_TRIAL_ACCOUNT_ID: Final = "trial-dup-0001"
# A trial account with no Amplitude profile at all.
TRIAL_WITHOUT_PROFILE: Final = "trial-1004"
