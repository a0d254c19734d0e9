"""marshmallow schemas compiled for the callback hot path: the same result, or marshmallow.

marshmallow's generic machinery costs about 1 µs per field and 5 µs per schema, and a
callback goes through about twenty fields in three schemas: with the cache misses of a busy
server, ~85 µs of the ~330 µs a callback costs in one process (measured). Almost every
callback is well formed, so CompiledSchema turns a schema's own declarations (fields, data
keys, required, marshmallow's validator objects and the schema's hooks) into a plain loop
over the input, for input whose values already have their fields' JSON types. Anything
else (a wrong or null type, a missing required field, a validator or hook that objects, a
type the loop does not know) is declined, and marshmallow itself loads the input, errors
and messages included. So a load's outcome is always marshmallow's: tests check the two
agree on every example and on fuzzed input (tests/unit/webhook/test_schema_compiler.py).

Compilation refuses (TypeError at import) any schema feature the loop does not reproduce,
so a schema change cannot silently take a different path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields
from marshmallow import missing as missing_value
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

T = TypeVar("T")
# Loads one value, or raises _DeclinedError (or marshmallow's ValidationError from a validator).
_Loader = Callable[[Any], Any]


class _DeclinedError(Exception):
    """The input is not the plain, valid case: marshmallow must load it."""


_DECLINED = _DeclinedError()
# The JSON type a field takes as it is: marshmallow returns such a value unchanged (a dict
# is copied). Exact types: bool is not an int here, and subclasses are not plain fields.
_PLAIN_TYPES: dict[type[fields.Field[Any]], type] = {
    fields.String: str,
    fields.Integer: int,
    fields.Boolean: bool,
}


class CompiledSchema(Generic[T]):
    """schema.load() with a fast path; load() returns and raises exactly what the schema's
    load() would."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._load = _compile_schema(schema)

    def load(self, data: Any) -> T:
        """Raises:
        ValidationError: as schema.load() does."""
        fast = self.load_fast(data)
        if fast is not None:
            return fast
        result: T = self.schema.load(data)
        return result

    def load_fast(self, data: Any) -> T | None:
        """The fast path alone: the result, or None where it declines (a loaded result is
        never None: a dict, or what a post_load hook builds)."""
        try:
            result: T = self._load(data)
        except (_DeclinedError, ValidationError):
            return None
        return result


def _compile_schema(schema: Schema) -> _Loader:
    hooks = schema._hooks  # marshmallow's resolved hooks: private, so pinned and tested
    if hooks[VALIDATES]:
        raise TypeError(f"{type(schema).__name__}: field-level @validates is not compiled")
    if schema.opts.unknown != EXCLUDE or schema.many:
        raise TypeError(f"{type(schema).__name__}: only unknown=EXCLUDE, many=False compile")
    pre_load = _hook_methods(schema, PRE_LOAD)
    validators = _hook_methods(schema, VALIDATES_SCHEMA)
    post_load = _hook_methods(schema, POST_LOAD)
    plan = tuple(
        (field.data_key or name, field.attribute or name, field.required, _compile_field(field))
        for name, field in schema.load_fields.items()
    )
    for _, attribute, _, _ in plan:
        if "." in attribute:
            raise TypeError(f"{type(schema).__name__}: dotted attribute {attribute!r}")

    def load(data: Any) -> Any:
        if type(data) is not dict:
            raise _DECLINED
        for hook in pre_load:
            data = hook(data, many=False, partial=None, unknown=EXCLUDE)
            if type(data) is not dict:
                raise _DECLINED
        result = {}
        for key, attribute, required, load_value in plan:
            if key in data:
                result[attribute] = load_value(data[key])
            elif required:
                raise _DECLINED
        for hook in validators:
            hook(result, partial=None, many=False, unknown=EXCLUDE)
        for hook in post_load:
            result = hook(result, many=False, partial=None, unknown=EXCLUDE)
        return result

    return load


def _hook_methods(schema: Schema, tag: str) -> tuple[Callable[..., Any], ...]:
    methods = []
    for attr_name, pass_collection, options in schema._hooks[tag]:  # see above
        if pass_collection or options.get("pass_original"):
            raise TypeError(f"{type(schema).__name__}.{attr_name}: only plain hooks compile")
        methods.append(getattr(schema, attr_name))
    return tuple(methods)


def _compile_field(field: fields.Field[Any]) -> _Loader:
    if field.allow_none or field.load_default is not missing_value:
        raise TypeError(f"{field!r}: null or default values are not compiled")
    checks = tuple(field.validators)
    # A custom field may declare the JSON type it returns unchanged (schemas.WholeNumber).
    plain = _PLAIN_TYPES.get(type(field)) or getattr(field, "plain_type", None)
    if plain is not None:
        return _plain_loader(plain, checks)
    if checks:
        raise TypeError(f"{field!r}: validators on a structured field are not compiled")
    if type(field) is fields.Dict and field.key_field is None and field.value_field is None:
        return _dict_loader
    if type(field) is fields.Nested and not field.many and field.only is None and not field.exclude:
        if field.unknown is not None:
            raise TypeError(f"{field!r}: a Nested field's own unknown= is not compiled")
        return _compile_schema(field.schema)
    if type(field) is fields.List:
        return _list_loader(_compile_field(field.inner))
    # Any other field (a custom one, for example) is left to marshmallow, value by value.
    return field.deserialize


def _plain_loader(plain: type, checks: tuple[Callable[[Any], Any], ...]) -> _Loader:
    def load(value: Any) -> Any:
        if type(value) is not plain:
            raise _DECLINED
        for check in checks:
            # marshmallow's validators raise ValidationError; a False answer is a failure too.
            if check(value) is False:
                raise _DECLINED
        return value

    return load


def _dict_loader(value: Any) -> Any:
    if type(value) is not dict:
        raise _DECLINED
    return dict(value)


def _list_loader(load_item: _Loader) -> _Loader:
    def load(value: Any) -> Any:
        if type(value) is not list:
            raise _DECLINED
        return [load_item(item) for item in value]

    return load
