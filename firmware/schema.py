"""JSON Schema (draft 2020-12) of Copper program JSON, generated from :data:`isa.OPS`.

``python -m copperline.firmware.schema > docs/program.schema.json`` regenerates the
published file; a test checks the committed file is up to date. The schema covers the
shape, types and ranges of every field (for the reference hardware's layer count); what
needs the whole program (labels that exist, table sizes, program size, agreeing label
definitions) only :func:`copperline.firmware.program.validate` checks.
"""

from __future__ import annotations

import json
import sys

from . import isa
from .program import LABEL_MAX_LEN, PROGRAM_VERSION, _STRING_KINDS

SCHEMA_ID = "https://copperline.invalid/schemas/program.schema.json"


def _layer_alternatives(layers: int) -> str:
    return "|".join(str(n) for n in range(layers))


def register_pattern(layers: int = isa.DEFAULT_LAYERS, fields=None) -> str:
    """Regex of the register names ``layer[N].field`` (N < layers; leading zeros allowed)."""
    names = fields or [f.name for f in isa.REGISTER_FIELDS]
    return rf"^layer\[0*({_layer_alternatives(layers)})\]\.({'|'.join(names)})$"


def _arg_schema(arg: isa.JsonArg, layers: int) -> dict:
    doc = {"description": arg.doc}
    kind = arg.kind
    if kind == "reg":
        return {**doc, "type": "string", "pattern": register_pattern(layers)}
    if kind == "reg_value":
        lo = min(f.min for f in isa.REGISTER_FIELDS)
        hi = max(f.max for f in isa.REGISTER_FIELDS)
        return {**doc, "type": "integer", "minimum": lo, "maximum": hi}
    if kind == "int":
        return {**doc, "type": "integer", "minimum": arg.min, "maximum": arg.max}
    if kind == "layer":
        return {**doc, "type": "integer", "minimum": 0, "maximum": layers - 1}
    if kind == "loop_count":
        return {**doc, "type": "integer",
                "anyOf": [{"const": -1}, {"minimum": 1, "maximum": isa.LOOP_COUNT_MAX}]}
    if kind == "true":
        return {**doc, "const": True}
    if kind == "label":
        return {**doc, "$ref": "#/$defs/label_name"}
    if kind in _STRING_KINDS:
        return {**doc, "type": "string", "minLength": 1, "maxLength": _STRING_KINDS[kind][0]}
    raise ValueError(f"isa.OPS uses an unknown JsonArg kind {kind!r}")


def _op_schema(spec: isa.OpSpec, layers: int) -> dict:
    props = {"op": {"const": spec.name}}
    props.update({a.name: _arg_schema(a, layers) for a in spec.args})
    out = {"description": spec.doc, "type": "object", "properties": props,
           "additionalProperties": False}
    if spec.forms:
        # Exactly one of the alternative forms (WAIT: us or vsync).
        out["required"] = ["op"]
        out["oneOf"] = [{"required": list(form)} for form in spec.forms]
    else:
        out["required"] = ["op"] + [a.name for a in spec.args]
    reg_values = [a.name for a in spec.args if a.kind == "reg_value"]
    if reg_values:
        # The value's range depends on the register: one if/then per register field.
        out["allOf"] = [
            {"if": {"properties": {"reg": {"pattern": register_pattern(layers, [f.name])}},
                    "required": ["reg"]},
             "then": {"properties": {v: {"minimum": f.min, "maximum": f.max} for v in reg_values}}}
            for f in isa.REGISTER_FIELDS]
    return out


def program_schema(layers: int = isa.DEFAULT_LAYERS) -> dict:
    """The JSON Schema of a program, as a dict."""
    defs = {
        "label_name": {"type": "string", "minLength": 1, "maxLength": LABEL_MAX_LEN},
        "label_marker": {
            "description": "Names the next op (or the end of the program) for JUMP and LOOP.",
            "type": "object", "properties": {"label": {"$ref": "#/$defs/label_name"}},
            "required": ["label"], "additionalProperties": False},
    }
    for spec in isa.OPS:
        defs[f"op_{spec.name}"] = _op_schema(spec, layers)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Copper program",
        "description": ("A Copper program (generated from copperline.firmware.isa; "
                        "`copper check` also checks labels, table sizes and program size)."),
        "type": "object",
        "required": ["version", "program"],
        "additionalProperties": False,
        "properties": {
            "version": {"const": PROGRAM_VERSION},
            "labels": {
                "description": "label name -> index into `program` (names the first op at or after it)",
                "type": "object",
                "propertyNames": {"$ref": "#/$defs/label_name"},
                "additionalProperties": {"type": "integer", "minimum": 0}},
            "program": {
                "type": "array", "minItems": 1,
                "items": {"oneOf": [{"$ref": "#/$defs/label_marker"}]
                          + [{"$ref": f"#/$defs/op_{s.name}"} for s in isa.OPS]}},
        },
        "$defs": defs,
    }


def render() -> str:
    """The schema as the text of ``docs/program.schema.json``."""
    return json.dumps(program_schema(), indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
