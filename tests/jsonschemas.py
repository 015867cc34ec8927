"""Validating `--json` documents against hivegen/schemas, strictly.

The shipped schemas are open (a consumer of version 1 must accept a field added
later); the tests validate against a closed copy, in which every object that lists
its properties has no others: a field hivegen prints but does not document fails.
"""

from __future__ import annotations

import functools
from typing import Any

from hivegen import jsondoc


def closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` wherever properties are listed and
    nothing else is said of the others."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: closed(value) for key, value in schema.items()}
    if "properties" in copy and "additionalProperties" not in copy:
        copy["additionalProperties"] = False
    return copy


@functools.cache
def _validator(kind: jsondoc.Kind) -> Any:
    import jsonschema

    schema = closed(jsondoc.schema(kind))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def kind_of(document: Any) -> jsondoc.Kind:
    """The kind a document's `schema` field names (AssertionError if none)."""
    assert isinstance(document, dict), f"a document is a JSON object, not {document!r:.80}"
    named = document.get("schema")
    for kind in jsondoc.Kind:
        if named == jsondoc.schema_id(kind):
            return kind
    raise AssertionError(f"no schema is named {named!r}")


def validate(document: Any) -> jsondoc.Kind:
    """Check `document` against the schema it names; its kind."""
    kind = kind_of(document)
    errors = sorted(_validator(kind).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        shown = "\n".join(
            f"  at {'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:10]
        )
        raise AssertionError(f"a {kind} document does not match its schema:\n{shown}")
    return kind
