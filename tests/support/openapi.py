"""Checking answers against the OpenAPI document's component schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "gateway" / "openapi.json").read_text())


def assert_conforms(instance: Any, schema_name: str) -> None:
    """Validate against a component schema of gateway/openapi.json (OAS 3.1 = JSON Schema
    2020-12)."""
    resource = Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)
    schema = {"$ref": f"urn:openapi#/components/schemas/{schema_name}"}
    Draft202012Validator(schema, registry=registry).validate(instance)
