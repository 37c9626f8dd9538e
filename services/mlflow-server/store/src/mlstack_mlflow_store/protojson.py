"""MLflow's JSON for a protobuf message, several times faster than `message_to_json`.

MLflow answers REST calls with `message_to_json`: protobuf's `MessageToDict` (field by field in
Python), a second walk that turns int64 fields back into numbers, and `json.dumps` with indent=2
(Python's pure-Python encoder). For 10,000 runs that is over a second of a 2-core VM's CPU. This
walks only the fields a message has set, with one converter per field chosen once from the message
descriptors, and encodes compactly with the C encoder: the same JSON value (field names as in the
.proto, int64 as numbers, enums by name, NaN and infinities as "NaN"/"Infinity"/"-Infinity", bytes in
base64), without the indentation.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor


def message_to_json(message) -> str:
    """The JSON MLflow's `message_to_json` gives for `message`, compact."""
    return json.dumps(message_to_dict(message), separators=(",", ":"))


def message_to_dict(message) -> dict:
    converters = _converters(message.DESCRIPTOR)
    return {field.name: converters[field.number](value) for field, value in message.ListFields()}


@cache
def _converters(descriptor: Descriptor) -> dict[int, Callable]:
    converters = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            raise NotImplementedError(f"{descriptor.full_name}.{field.name} is a map field")
        convert = _scalar_converter(field)
        if field.is_repeated:
            convert = lambda values, one=convert: [one(value) for value in values]  # noqa: E731
        converters[field.number] = convert
    return converters


def _scalar_converter(field: FieldDescriptor) -> Callable:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        if field.message_type.file.package == "google.protobuf":
            raise NotImplementedError(f"{field.full_name}: well-known type {field.message_type.full_name}")
        return message_to_dict
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        names = {value.number: value.name for value in field.enum_type.values}
        return lambda number: names.get(number, number)
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        raise NotImplementedError(f"{field.full_name}: 32-bit float")
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return double_value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda raw: base64.b64encode(raw).decode("utf-8")
    return _same


def double_value(value: float) -> float | str:
    """A double as MLflow's JSON spells it: a number, or "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _same(value):
    return value
