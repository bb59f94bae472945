"""Where a called party is: the contract's zone, or one inferred from the phone's area code.

Kept apart from contracts.calling_policy so the workflow never loads phonenumbers' metadata:
starters (the importer, the operator CLI) resolve the place once and pass it in.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Final

import phonenumbers
from holidays.countries.united_states import UnitedStates as UnitedStatesHolidays
from phonenumbers import geocoder
from phonenumbers import timezone as number_timezones

from contracts.calling_policy import CallingPlace

# Area codes the library cannot place ("Etc/Unknown") and non-geographic ones are refused.
_UNKNOWN_ZONE: Final = "Etc/Unknown"
_STATE_SUFFIX: Final = re.compile(r",\s*([A-Z]{2})$")
_STATE_NAMES: Final = {
    **{name.lower(): code for name, code in UnitedStatesHolidays.subdivisions_aliases.items()},
    "washington d.c.": "DC",
}
_STATE_CODES: Final = frozenset(UnitedStatesHolidays.subdivisions)
_NANP_REGIONS: Final = frozenset({"US", "PR", "GU", "VI", "AS", "MP"})


class UnknownPlaceError(ValueError):
    """The phone number names no US place; the message never quotes the number."""


def infer_calling_place(phone: str) -> CallingPlace:
    """The zone(s) and state of a US (NANP) number's area code, marked as inferred."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        raise UnknownPlaceError("is not a phone number") from None
    region = phonenumbers.region_code_for_number(number)
    if not phonenumbers.is_valid_number(number) or region not in _NANP_REGIONS:
        raise UnknownPlaceError("is not a valid US phone number") from None
    zones = tuple(z for z in number_timezones.time_zones_for_number(number) if z != _UNKNOWN_ZONE)
    if not zones:
        raise UnknownPlaceError("has an area code with no known time zone")
    area_code = str(number.national_number)[:3]
    return CallingPlace(
        timezones=zones[:4],
        region=_state_of(number, region),
        inferred=True,
        basis=f"area code {area_code}",
    )


def resolve_calling_place(
    *, phone: str, timezone: str | None, region: str | None = None
) -> CallingPlace:
    """The contract's zone when given (its state from the argument or the area code), else inferred.

    The state decides the stricter state rules. Florida and Oklahoma presume a caller with their
    area code is in the state, so the area code's state is used unless the contract names one.
    """
    inferred = infer_calling_place(phone)
    if timezone is None:
        return inferred if region is None else inferred.model_copy(update={"region": region})
    return CallingPlace(
        timezones=(timezone,),
        region=region if region is not None else inferred.region,
        inferred=False,
        basis="contract" if region is not None else f"contract; state from {inferred.basis}",
    )


def _state_of(number: phonenumbers.PhoneNumber, region: str) -> str | None:
    if region != "US":
        return region if region in _STATE_CODES else None
    description = geocoder.description_for_number(number, "en").strip()
    suffix = _STATE_SUFFIX.search(description)
    if suffix is not None and suffix.group(1) in _STATE_CODES:
        return suffix.group(1)
    name = description.lower().removesuffix(" state")
    return _STATE_NAMES.get(name)


def public_holidays(*, region: str | None, first: date, days: int) -> tuple[date, ...]:
    """US federal (and the state's) public holidays from `first` for `days` days, for a policy."""
    last = first + timedelta(days=days)
    subdivision = region if region in UnitedStatesHolidays.subdivisions else None
    years = range(first.year, last.year + 1)
    calendar = UnitedStatesHolidays(subdiv=subdivision, years=years)  # type: ignore[no-untyped-call]
    return tuple(sorted(day for day in calendar if first <= day <= last))
