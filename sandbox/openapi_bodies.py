"""OpenAPI request bodies for routes that read raw bodies, so schema-driven fuzzers reach them.

The routes keep parsing bytes themselves (their error shapes are the vendors'); these models only
document what the vendor documents, in each operation's `requestBody`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

JSON_MEDIA = "application/json"
FORM_MEDIA = "application/x-www-form-urlencoded"


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined: inside an operation, `#/$defs/...`
    would point at the OpenAPI document's root, where there are none."""
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def request_body(*models: type[BaseModel], media: str = JSON_MEDIA) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is one of `models` (a union when several)."""
    schemas = [inline_schema(model) for model in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}
