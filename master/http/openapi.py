"""The OpenAPI 3.1 document of the API, generated from the routes and the service's typed requests.

Each route's request type (its fields: path, query or body) is described by msgspec's JSON Schema of
the type itself, so the document cannot drift from what the API decodes.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from saltmarsh.protocol.version import VERSION

from ..service.registry import OPERATIONS
from .routes import OPERATION_ROUTES, ROUTES, SEGMENT, WAIT_ROUTE, Route

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}


def openapi_path(route: Route) -> str:
    """``/v1/agents/([^/]+)`` as ``/v1/agents/{id}``."""
    names = iter(route.params)
    return re.sub(re.escape(SEGMENT), lambda _match: "{" + next(names) + "}", route.path)


def document() -> dict[str, Any]:
    """The whole document."""
    served = (*ROUTES, WAIT_ROUTE)
    types = [OPERATIONS[route.command].request for route in served]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    routes = (*served, *OPERATION_ROUTES)
    schemas = (*schemas, *({"type": "object"} for _ in OPERATION_ROUTES))  # an id in the path: nothing else
    paths: dict[str, dict[str, Any]] = {}
    for route, schema in zip(routes, schemas, strict=True):
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}:{openapi_path(route)}", "summary": route.summary,
            "x-saltmarsh-operation": route.command,
            "security": [{"bearer": [route.scope] if route.scope else []}], "x-saltmarsh-scope": route.scope,
            "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                           for name in route.params],
            "responses": {str(route.status): {"description": "success", "content": {"application/json": {}}},
                          "default": {"description": "an error", "content": {
                              "application/json": {"schema": ERROR_SCHEMA}}}},
        }
        if route.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        else:
            operation["x-saltmarsh-query"] = schema
        paths.setdefault(openapi_path(route), {})[route.method.lower()] = operation
    return {"openapi": "3.1.0", "info": {"title": "saltmarsh", "version": VERSION}, "paths": paths,
            "components": {"schemas": components,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
