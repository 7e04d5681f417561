"""The field rules, written once and used by the Python API, HTTP and CLI.

Every check raises InvalidInput naming the field and the rule it broke, before
anything is written, so a rejected call never leaves half a record behind.
"""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
import uuid as uuid_mod
from typing import Any, Literal, overload

from servicegroup.conf import METRICS_PER_SERVICE
from servicegroup.exceptions import InvalidInput

MAX_NAME_LENGTH = 255
MAX_REASON_LENGTH = 255
MAX_VERSION = 2**31 - 1  # fits a signed 32-bit INTEGER on every dialect


@overload
def name(field: str, value: Any, *, required: Literal[True] = True) -> str: ...
@overload
def name(field: str, value: Any, *, required: bool) -> str | None: ...


def name(field: str, value: Any, *, required: bool = True) -> str | None:
    """Check host/binary/topic/availability_zone.

    "Printable" means no control, format, surrogate, private-use or
    separator character, the plain space aside (see _FORBIDDEN_CATEGORIES).
    Names end up in SQL, znode paths, cache keys and metric labels; the rule is
    strict enough that every backend can carry any name that passes.
    """
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_NAME_LENGTH} characters")
    if not _printable(value):
        raise InvalidInput(field, "must contain only printable characters")
    if value != value.strip():
        raise InvalidInput(field, "must not have leading or trailing whitespace")
    return value


# Unicode categories a name may not contain: controls, format characters
# (zero-width, bidi overrides), surrogates, private use, and every separator
# but the plain space. Unassigned code points are allowed: rejecting them
# would make a name's validity depend on the Python's Unicode version.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Zs"})


def _forbidden(char: str) -> bool:
    return char != " " and unicodedata.category(char) in _FORBIDDEN_CATEGORIES


def _printable(value: str) -> bool:
    # isprintable() is stricter (it also refuses unassigned code points), so
    # it is a fast yes for nearly every real name.
    return value.isprintable() or not any(map(_forbidden, value))


def _forbidden_ranges() -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(sys.maxunicode + 1):
        if _forbidden(chr(code)):
            if start is None:
                start = code
        elif start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    return ranges


def _split_surrogates(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges with D800-DFFF as a range of its own."""
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        for a, b in (
            (lo, min(hi, 0xD7FF)),
            (max(lo, 0xD800), min(hi, 0xDFFF)),
            (max(lo, 0xE000), hi),
        ):
            if a <= b:
                out.append((a, b))
    return out


@functools.cache
def name_pattern() -> str:
    """name()'s character rules as one regular expression, for the OpenAPI document.

    Derived from the same predicate as name(), over every code point, so it
    is the rule itself, not a copy that can drift: clients and fuzzers can
    tell a valid name from an invalid one without asking. The only allowed
    whitespace is the space, so "no leading or trailing whitespace" is "no
    space at either end"; lengths are minLength/maxLength. Python's re and
    ECMA-262 (with the u flag, as JSON Schema specifies) read it alike.
    """

    def char(code: int) -> str:
        # \uXXXX reads the same in both dialects and keeps lone surrogates out
        # of the UTF-8 document; astral characters stay literal.
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    def chars(ranges: list[tuple[int, int]]) -> str:
        return "".join(char(lo) if lo == hi else f"{char(lo)}-{char(hi)}" for lo, hi in ranges)

    # Lone surrogates (Cs) are left out: they are not Unicode scalar values,
    # so no conforming JSON text holds one (RFC 8259 section 8.2) and JSON
    # Schema does not describe them; Hypothesis-based tools also generate
    # non-matching strings from a class that names them. name() refuses them.
    ranges = [r for r in _split_surrogates(_forbidden_ranges()) if not 0xD800 <= r[0] <= 0xDFFF]
    bmp = chars([r for r in ranges if r[1] <= 0xFFFF])
    # Astral exclusions as a lookahead: the same set, but a negated class
    # naming astral ranges costs Hypothesis ~0.5 s to build per generated
    # example (a fuzz run of minutes). '.' stops at a newline, which the
    # class refuses anyway.
    astral = chars([r for r in ranges if r[0] > 0xFFFF])
    return f"^(?!.*[{astral}])[^ {bmp}](?:[^{bmp}]*[^ {bmp}])?$"


def version(value: Any, field: str = "version") -> int:
    # bool is an int subclass; True as a version is always a caller bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if value < 0:
        raise InvalidInput(field, "must be a non-negative integer")
    if value > MAX_VERSION:
        raise InvalidInput(field, f"must be at most {MAX_VERSION}")
    return value


def reason(value: Any, field: str = "disabled_reason") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if len(value) > MAX_REASON_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_REASON_LENGTH} characters")
    return value


def flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(field, "must be true or false")
    return value


def service_id(value: Any, field: str = "id") -> str:
    """Normalise a service uuid; garbage is 'not found' to HTTP, 'invalid' here."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a UUID string")
    try:
        return str(uuid_mod.UUID(value))
    except ValueError:
        raise InvalidInput(field, "must be a UUID") from None


STATES = ("up", "down", "unknown")


def one_of(value: Any, field: str, choices: tuple[str, ...]) -> str | None:
    """None, or one of `choices`."""
    if value is None:
        return None
    if value not in choices:
        raise InvalidInput(field, f"must be one of {', '.join(choices)}")
    return str(value)


def state(value: Any, field: str = "state") -> str | None:
    return one_of(value, field, STATES)


# Which services /metrics gives their own series: [api] metrics_per_service, or
# ?per_service= for one scrape.
PER_SERVICE = tuple(name for name, _ in METRICS_PER_SERVICE)


def per_service(value: Any, field: str = "per_service") -> str | None:
    return one_of(value, field, PER_SERVICE)


MAX_WAIT = 60.0
MAX_EVENTS_PAGE = 1000
MAX_CURSOR = 2**63 - 1  # event ids are signed 64-bit (BIGINT) on every dialect


def cursor(value: Any, field: str = "since") -> int:
    """An event id to read after; None means from the oldest event kept."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if value < 0:
        raise InvalidInput(field, "must be a non-negative integer")
    if value > MAX_CURSOR:
        # Past any id a database can hold; passed on, the driver overflows (a 500).
        raise InvalidInput(field, f"must be at most {MAX_CURSOR}")
    return value


def wait(value: Any, field: str = "wait") -> float:
    """Long-poll seconds: bounded, so a waiting client cannot pin a server forever."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, "must be a number of seconds")
    if not 0 <= value <= MAX_WAIT:
        raise InvalidInput(field, f"must be between 0 and {MAX_WAIT:g} seconds")
    return float(value)


# A query's own down time (get_all(down_time=), ?down_time=): a year at most,
# well inside what a datetime can subtract (a huge one overflowed into a 500).
MAX_DOWN_TIME = 365 * 24 * 3600.0


def down_time(value: Any, field: str = "down_time") -> float | None:
    """A query's own threshold in seconds; None: each binary's configured one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, "must be a number of seconds")
    if not 0 < value <= MAX_DOWN_TIME:  # NaN fails this too
        rule = f"must be greater than 0 and at most {MAX_DOWN_TIME:.0f} seconds (a year)"
        raise InvalidInput(field, rule)
    return float(value)


def limit(value: Any, field: str = "limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if not 1 <= value <= MAX_EVENTS_PAGE:
        raise InvalidInput(field, f"must be between 1 and {MAX_EVENTS_PAGE}")
    return value


# GET /v1/services?sort=&order=&offset=&limit=: one page of a fleet, for a
# browser that cannot take 100,000 rows at once (server/service_paging.py).
SERVICE_SORT_KEYS = ("host", "binary", "availability_zone", "state", "version", "last_heartbeat")
SORT_ORDERS = ("asc", "desc")
MAX_OFFSET = 2**31 - 1


def sort_key(value: Any, field: str = "sort") -> str | None:
    return one_of(value, field, SERVICE_SORT_KEYS)


def sort_order(value: Any, field: str = "order") -> str | None:
    return one_of(value, field, SORT_ORDERS)


def offset(value: Any, field: str = "offset") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if not 0 <= value <= MAX_OFFSET:
        raise InvalidInput(field, f"must be between 0 and {MAX_OFFSET}")
    return value


def service_ids(value: Any, field: str = "ids") -> list[str]:
    """A batch of service uuids (POST /v1/heartbeats), normalised, repeats dropped, in order.

    No count of its own: the HTTP body limit (64 KiB, some 1,600 ids) bounds it.
    """
    if not isinstance(value, list):
        raise InvalidInput(field, "must be a list of UUIDs")
    return list(dict.fromkeys(service_id(one, field) for one in value))


# -- claims ------------------------------------------------------------------------

MAX_KIND_LENGTH = 64
MAX_DETAILS_BYTES = 4096
_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def kind(field: str, value: Any) -> str:
    """resource_type and operation: short words, since they appear in policy lines
    (`TYPE:OPERATION = ...`) and metric labels, where ':', '=', ',' or spaces would
    be ambiguous."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_KIND_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_KIND_LENGTH} characters")
    if not set(value) <= _KIND_CHARS:
        raise InvalidInput(field, "may contain only letters, digits, '_', '.' and '-'")
    return value


def resource_id(value: Any, field: str = "resource_id") -> str:
    """Any printable name, like a host: instance uuids, stack names, paths."""
    checked = name(field, value)
    assert checked is not None
    return checked


def details(value: Any, field: str = "details") -> str | None:
    """A JSON object of at most MAX_DETAILS_BYTES once encoded; returned encoded."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(field, "must be a JSON object")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_DETAILS_BYTES:
        raise InvalidInput(field, f"must be at most {MAX_DETAILS_BYTES} bytes as JSON")
    return text


# Epochs travel in JSON bodies, where integers above 2**53 are not exact (a
# client may send 9.223372036854776e18 for 2**63 - 1). An epoch rises by one per
# acquire or takeover, so 2**53 - 1 is never reached.
MAX_EPOCH = 2**53 - 1


def epoch(value: Any, field: str = "epoch") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if not 1 <= value <= MAX_EPOCH:
        raise InvalidInput(field, f"must be an integer from 1 to {MAX_EPOCH}")
    return value


CLAIM_STATES = ("held", "recovering", "released", "deleted")


def claim_state(value: Any, field: str = "state") -> str | None:
    return one_of(value, field, CLAIM_STATES)


def incarnation(value: Any, field: str = "incarnation") -> str:
    """A process start's own uuid; chosen by the claimant, so checked like a service id."""
    return service_id(value, field)
