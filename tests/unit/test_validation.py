"""The field rules, one by one: every rule names its field, so HTTP and CLI can say why."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from servicegroup import validation
from servicegroup.exceptions import InvalidInput

NAME_FIELDS = ("host", "binary", "topic", "availability_zone")


def rejected(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "compute-1",
        "a",
        "x" * validation.MAX_NAME_LENGTH,
        "rack 7/compute.1",  # spaces, '/' and '.' are legal: backends must escape them
        "nœud-é-東京",
        "100%_{braces}*?",
        "inner  spaces",
        "unassigned\u0378",  # valid text, whatever this Python's Unicode version says
    ],
)
def test_name_accepts_printable_names(field: str, value: str) -> None:
    assert validation.name(field, value) == value


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        ("x" * (validation.MAX_NAME_LENGTH + 1), "at most 255 characters"),
        ("tab\there", "printable"),
        ("new\nline", "printable"),
        ("nul\x00", "printable"),
        ("bell\x07", "printable"),
        ("del\x7f", "printable"),
        ("\u200bzero-width", "printable"),
        (" leading", "leading or trailing whitespace"),
        ("trailing ", "leading or trailing whitespace"),
        ("  both  ", "leading or trailing whitespace"),
        ("\u3000ideographic-space", "printable"),
        ("private\ue000use", "printable"),
        ("bidi\u202eoverride", "printable"),
        ("lone\ud800surrogate", "printable"),
        (42, "must be a string"),
        (b"bytes", "must be a string"),
        (["list"], "must be a string"),
    ],
)
def test_name_rejects(field: str, value: object, rule: str) -> None:
    err = rejected(validation.name, field, value)
    assert err.field == field
    assert rule in err.rule
    assert str(err) == f"{field}: {err.rule}"


def test_name_length_counts_characters_not_bytes() -> None:
    # 255 three-byte characters: the columns are VARCHAR(255) characters on every dialect.
    value = "東" * validation.MAX_NAME_LENGTH
    assert validation.name("host", value) == value


def test_name_required_and_optional() -> None:
    err = rejected(validation.name, "host", None)
    assert (err.field, err.rule) == ("host", "is required")
    assert validation.name("topic", None, required=False) is None
    # Optional does not mean lax: a given value still obeys every rule.
    assert rejected(validation.name, "topic", "", required=False).field == "topic"


@pytest.mark.parametrize("value", [0, 1, 41, validation.MAX_VERSION])
def test_version_accepts(value: int) -> None:
    assert validation.version(value) == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (True, "must be an integer"),  # bool is an int subclass, never a version
        (False, "must be an integer"),
        (1.0, "must be an integer"),
        ("3", "must be an integer"),
        (None, "must be an integer"),
        (-1, "non-negative"),
        (validation.MAX_VERSION + 1, f"at most {validation.MAX_VERSION}"),
    ],
)
def test_version_rejects(value: object, rule: str) -> None:
    err = rejected(validation.version, value)
    assert err.field == "version"
    assert rule in err.rule


def test_version_names_the_field_it_is_given() -> None:
    assert rejected(validation.version, -1, field="min_version").field == "min_version"


def test_reason() -> None:
    assert validation.reason(None) is None
    assert validation.reason("") == ""
    # Free text, kept as the admin typed it.
    assert validation.reason(" maintenance\n") == " maintenance\n"
    reason = "r" * validation.MAX_REASON_LENGTH
    assert validation.reason(reason) == reason
    err = rejected(validation.reason, "r" * (validation.MAX_REASON_LENGTH + 1))
    assert (err.field, err.rule) == ("disabled_reason", "must be at most 255 characters")
    err = rejected(validation.reason, 5)
    assert (err.field, err.rule) == ("disabled_reason", "must be a string")


@pytest.mark.parametrize("value", [True, False])
def test_flag_accepts_bools(value: bool) -> None:
    assert validation.flag("disabled", value) is value


@pytest.mark.parametrize("value", [0, 1, "true", "false", None, 1.0])
def test_flag_rejects_truthy_lookalikes(value: object) -> None:
    err = rejected(validation.flag, "forced_down", value)
    assert (err.field, err.rule) == ("forced_down", "must be true or false")


def test_service_id_normalises() -> None:
    raw = uuid.uuid4()
    assert validation.service_id(str(raw).upper()) == str(raw)
    assert validation.service_id(raw.hex) == str(raw)


@pytest.mark.parametrize(
    ("value", "rule"),
    [("not-a-uuid", "must be a UUID"), ("", "must be a UUID"), (42, "must be a UUID string")],
)
def test_service_id_rejects(value: object, rule: str) -> None:
    err = rejected(validation.service_id, value)
    assert (err.field, err.rule) == ("id", rule)


@pytest.mark.parametrize("value", [None, "up", "down", "unknown"])
def test_state_accepts(value: str | None) -> None:
    assert validation.state(value) == value


@pytest.mark.parametrize("value", ["UP", "alive", "", 1])
def test_state_rejects(value: object) -> None:
    err = rejected(validation.state, value)
    assert (err.field, err.rule) == ("state", "must be one of up, down, unknown")


@pytest.mark.parametrize("value", [None, "all", "not_up", "none"])
def test_per_service_accepts(value: str | None) -> None:
    assert validation.per_service(value) == value


@pytest.mark.parametrize("value", ["ALL", "down", "", 0])
def test_per_service_rejects(value: object) -> None:
    err = rejected(validation.per_service, value)
    assert (err.field, err.rule) == ("per_service", "must be one of all, not_up, none")


def test_invalid_input_is_a_value_error() -> None:
    # Plain Python callers may already catch ValueError for bad arguments.
    assert isinstance(rejected(validation.version, -1), ValueError)


def test_cursor_is_bounded_by_the_largest_event_id() -> None:
    """A cursor past BIGINT used to reach the database and overflow there (a 500)."""
    assert validation.cursor(validation.MAX_CURSOR) == validation.MAX_CURSOR
    with pytest.raises(InvalidInput, match="since: must be at most"):
        validation.cursor(validation.MAX_CURSOR + 1)


def test_name_pattern_is_the_name_rule_for_every_code_point() -> None:
    """The OpenAPI pattern must accept exactly what name() accepts, or fuzzers disagree."""
    import re
    import sys

    pattern = re.compile(validation.name_pattern())

    def accepted(value: str) -> bool:
        try:
            validation.name("host", value)
        except InvalidInput:
            return False
        return True

    # Every BMP code point, and a stride through the rest (all of them takes seconds).
    codes = [*range(0x10000), *range(0x10000, sys.maxunicode + 1, 97), sys.maxunicode]
    for code in codes:
        for value in (chr(code), f"a{chr(code)}b"):
            if 0xD800 <= code <= 0xDFFF:
                # Not text JSON can carry (see name_pattern); refused all the same.
                assert not accepted(value)
                continue
            assert bool(pattern.fullmatch(value)) == accepted(value), hex(code)
    every_printable = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isprintable())
    assert pattern.fullmatch(f"a{every_printable}b")
    for value in ("a b", " a", "a ", "a\\]^-[b", "x" * 255, "é\U0001f600"):
        assert bool(pattern.fullmatch(value)) == accepted(value), value


@pytest.mark.parametrize(
    ("check", "field", "value", "rule"),
    [
        (validation.sort_key, "sort", "uuid", "must be one of host, binary, availability_zone"),
        (validation.sort_order, "order", "up", "must be one of asc, desc"),
        (validation.offset, "offset", -1, "must be between 0 and 2147483647"),
        (validation.offset, "offset", 2**31, "must be between 0 and 2147483647"),
        (validation.offset, "offset", True, "must be an integer"),
        (validation.offset, "offset", "1", "must be an integer"),
    ],
)
def test_service_page_parameters_are_refused_naming_the_field(
    check: Any, field: str, value: object, rule: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(value)
    assert caught.value.field == field
    assert rule in str(caught.value)


def test_service_page_parameters_accept_their_range() -> None:
    assert validation.sort_key(None) is None and validation.sort_order(None) is None
    assert [validation.sort_key(k) for k in validation.SERVICE_SORT_KEYS] == list(
        validation.SERVICE_SORT_KEYS
    )
    assert validation.sort_order("desc") == "desc"
    assert validation.offset(0) == 0 and validation.offset(2**31 - 1) == 2**31 - 1


def test_down_time_is_positive_float_seconds_up_to_a_year() -> None:
    assert validation.down_time(None) is None
    assert validation.down_time(0.25) == 0.25
    assert validation.down_time(30) == 30.0 and isinstance(validation.down_time(30), float)
    assert validation.down_time(validation.MAX_DOWN_TIME) == validation.MAX_DOWN_TIME
    for bad, rule in [
        (True, "must be a number of seconds"),
        ("5", "must be a number of seconds"),
        (0, "must be greater than 0 and at most 31536000 seconds (a year)"),
        (-1.0, "must be greater than 0"),
        (float("nan"), "must be greater than 0"),
        (float("inf"), "must be greater than 0"),
        (validation.MAX_DOWN_TIME * 2, "at most"),
    ]:
        error = rejected(validation.down_time, bad)
        assert error.field == "down_time" and rule in error.rule, bad
