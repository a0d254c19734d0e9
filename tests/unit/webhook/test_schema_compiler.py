"""webhook.schema_compiler: a compiled load gives marshmallow's outcome, always.

The contract: CompiledSchema.load(x) returns what schema.load(x) returns, or raises the
ValidationError it raises, with the same messages. Its fast path either declines or returns
exactly marshmallow's result, and it does not decline for well-formed callbacks (otherwise
it would be dead weight).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from tests.conftest import example_files, load_example
from webhook.schema_compiler import CompiledSchema
from webhook.schemas import CALLBACK_SCHEMA, DETAILS_SCHEMAS

EXAMPLES = {path.name: load_example(path.name) for path in example_files()}


def outcome(load: Any, data: Any) -> tuple[str, Any]:
    """("ok", result) or ("error", marshmallow's messages)."""
    try:
        return "ok", load(copy.deepcopy(data))
    except ValidationError as err:
        return "error", err.messages


def assert_same_as_marshmallow(compiled: CompiledSchema[Any], data: Any) -> None:
    expected = outcome(compiled.schema.load, data)
    assert outcome(compiled.load, data) == expected
    fast = compiled.load_fast(copy.deepcopy(data))
    if fast is not None:
        assert ("ok", fast) == expected


# --- well-formed callbacks take the fast path -------------------------------------------


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_every_documented_example_takes_the_fast_path_with_marshmallows_result(
    path: Path,
) -> None:
    body = EXAMPLES[path.name]
    envelope = CALLBACK_SCHEMA.load_fast(body)
    details = DETAILS_SCHEMAS[body["eventType"]].load_fast(body["payload"]["details"])

    assert envelope == CALLBACK_SCHEMA.schema.load(body)
    assert details == DETAILS_SCHEMAS[body["eventType"]].schema.load(body["payload"]["details"])


def test_a_file_list_is_built_into_recorded_files_as_marshmallow_does() -> None:
    details = load_example("31_")["payload"]["details"]

    fast = DETAILS_SCHEMAS[31].load_fast(details)

    assert fast is not None
    assert fast == DETAILS_SCHEMAS[31].schema.load(details)
    assert fast["file_list"]


def test_the_other_spellings_agora_uses_are_accepted_on_the_fast_path() -> None:
    details = copy.deepcopy(load_example("43_")["payload"]["details"])
    details["utcMs"] = details.pop("UtcMs")

    fast = DETAILS_SCHEMAS[43].load_fast(details)

    assert fast is not None
    assert fast == DETAILS_SCHEMAS[43].schema.load(details)


# --- anything else is marshmallow's to decide --------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("payload", "sequence"), "7"),  # marshmallow accepts a numeric string: so do we
        (("payload", "sequence"), 7.0),
        (("payload", "sequence"), True),
        (("payload", "sequence"), -1),  # a validator objects
        (("payload", "sequence"), 2**64),  # beyond what the store's JSON can hold
        (("payload", "cname"), None),
        (("payload", "cname"), 12),
        (("productId",), 4),
        (("sid",), "not-the-payload-sid"),  # a schema-level validator objects
        (("payload",), "text"),
        (("payload", "details"), []),
    ],
)
def test_input_off_the_plain_case_is_declined_and_loaded_by_marshmallow(
    path: tuple[str, ...], value: Any
) -> None:
    body = copy.deepcopy(load_example("33_"))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value

    assert CALLBACK_SCHEMA.load_fast(body) is None
    assert_same_as_marshmallow(CALLBACK_SCHEMA, body)


def test_a_missing_required_field_gets_marshmallows_error() -> None:
    body = copy.deepcopy(load_example("33_"))
    del body["payload"]["sendts"]

    with pytest.raises(ValidationError) as caught:
        CALLBACK_SCHEMA.load(body)

    assert caught.value.messages == {"payload": {"sendts": ["Missing data for required field."]}}


def test_details_whose_msg_name_does_not_match_get_marshmallows_error() -> None:
    details = dict(load_example("33_")["payload"]["details"], msgName="uploaded")

    assert DETAILS_SCHEMAS[33].load_fast(details) is None
    assert_same_as_marshmallow(DETAILS_SCHEMAS[33], details)


# --- fuzzed: the outcome never differs ---------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.integers(-2, 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["7", "1.5", "true", "fileName", "uploaded"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document (list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths_of(value, (*prefix, index))
    return found


@st.composite
def mutated_callbacks(draw: st.DrawFn) -> dict[str, Any]:
    """An example callback with a few values replaced, keys removed or keys added."""
    body: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(sorted(EXAMPLES.values(), key=str))))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths_of(body)))
        parent: Any = body
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["filename", "utcMs", "extra", "uid"]))] = draw(json_values)
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_callbacks())
def test_the_envelope_outcome_is_marshmallows_for_any_mutation(body: dict[str, Any]) -> None:
    assert_same_as_marshmallow(CALLBACK_SCHEMA, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_callbacks(), event_type=st.sampled_from(sorted(DETAILS_SCHEMAS)))
def test_the_details_outcome_is_marshmallows_for_any_mutation(
    body: dict[str, Any], event_type: int
) -> None:
    payload = body.get("payload")
    details = payload.get("details") if isinstance(payload, dict) else None
    assert_same_as_marshmallow(DETAILS_SCHEMAS[event_type], details)


# --- what compilation refuses ------------------------------------------------------------


class FieldValidated(Schema):
    name = fields.String()

    @validates("name")
    def check_name(self, value: str, **_: Any) -> None:
        pass


class RaisesOnUnknown(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String()


class Nullable(Schema):
    class Meta:
        unknown = "exclude"

    name = fields.String(allow_none=True)


class PassesOriginal(Schema):
    class Meta:
        unknown = "exclude"

    name = fields.String()

    @validates_schema(pass_original=True)
    def look_at_original(self, data: Any, original: Any, **_: Any) -> None:
        pass


class ValidatedList(Schema):
    class Meta:
        unknown = "exclude"

    names = fields.List(fields.String(), validate=validate.Length(max=2))


@pytest.mark.parametrize(
    "schema", [FieldValidated, RaisesOnUnknown, Nullable, PassesOriginal, ValidatedList]
)
def test_a_feature_the_fast_path_does_not_reproduce_refuses_to_compile(
    schema: type[Schema],
) -> None:
    with pytest.raises(TypeError):
        CompiledSchema(schema())
