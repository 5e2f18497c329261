"""The OpenAPI 3.1 document of the admin API, built as data and served at /api/openapi.json.

The schemas describe the JSON shapes of source.py's TypedDicts; tests keep the paths equal to
the routes of api.py, the schemas equal to the TypedDicts, and validate real responses
against them. Nothing here touches sockets.
"""

from __future__ import annotations

from typing import Any

from bastion import __version__

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], description: str = "") -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


_STRING: Schema = {"type": "string"}
_INTEGER: Schema = {"type": "integer"}
_NUMBER: Schema = {"type": "number"}
_BOOLEAN: Schema = {"type": "boolean"}

SCHEMAS: dict[str, Schema] = {
    "Error": _object({"error": _STRING}, "Every error answer."),
    "Server": _object(
        {
            "index": {**_INTEGER, "description": "Stable id of the server in its upstream."},
            "label": {**_STRING, "description": '"host:port"'},
            "state": {
                "enum": ["up", "down", "ejected", "drained"],
                "description": "The first of drained, down, ejected that applies, else up.",
            },
            "health": {
                "enum": ["up", "down", "unchecked"],
                "description": "The active checks' verdict; unchecked without checks.",
            },
            "health_detail": {**_STRING, "description": "What the last check saw."},
            "ejected_until": {
                **_nullable(_NUMBER),
                "description": "Unix time a passive ejection ends; null when not ejected.",
            },
            "in_flight": {**_INTEGER, "description": "Requests sent and not finished."},
            "latency_ms": {**_NUMBER, "description": "Moving average of response times."},
            "weight": _INTEGER,
            "max_conns": {**_INTEGER, "description": "0: no limit."},
            "backup": {**_BOOLEAN, "description": "Used only when no primary is usable."},
            "drained": _BOOLEAN,
        },
        "One origin server.",
    ),
    "Upstream": _object(
        {"name": _STRING, "balance": _STRING, "servers": {"type": "array", "items": _ref("Server")}}
    ),
    "Upstreams": _object({"upstreams": {"type": "array", "items": _ref("Upstream")}}),
    "Route": _object(
        {
            "path": {**_STRING, "description": "Path prefix, or the regular expression."},
            "regex": _BOOLEAN,
            "methods": _nullable({"type": "array", "items": _STRING}),
            "upstream": _nullable(_STRING),
            "redirect": _nullable(_STRING),
        }
    ),
    "Site": _object(
        {
            "hosts": {"type": "array", "items": _STRING},
            "tls": _BOOLEAN,
            "routes": {"type": "array", "items": _ref("Route")},
        }
    ),
    "Sites": _object({"sites": {"type": "array", "items": _ref("Site")}}),
    "ReloadResult": _object(
        {
            "ok": _BOOLEAN,
            "time": {**_NUMBER, "description": "Unix time the reload ended."},
            "error": {
                **_nullable(_STRING),
                "description": "Every problem found, one per line; null when ok.",
            },
            "config_hash": {
                **_nullable(_STRING),
                "description": "sha256 (hex) of the file read; null when unreadable.",
            },
            "generation": {**_INTEGER, "description": "Configuration generation serving now."},
        }
    ),
    "Worker": _object(
        {
            "pid": _INTEGER,
            "generation": _INTEGER,
            "state": {"enum": ["starting", "serving", "stopping"]},
        }
    ),
    "Status": _object(
        {
            "version": _STRING,
            "pid": _INTEGER,
            "started": {**_NUMBER, "description": "Unix time."},
            "uptime_s": _NUMBER,
            "config_path": _STRING,
            "config_hash": {
                **_nullable(_STRING),
                "description": "sha256 (hex) of the configuration file serving now.",
            },
            "generation": _INTEGER,
            "workers": {"type": "array", "items": _ref("Worker")},
            "last_reload": {
                **_nullable(_ref("ReloadResult")),
                "description": "null until the first reload.",
            },
        }
    ),
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _ref("Error")
REFUSALS: dict[str, Schema] = {
    "401": _json(_ERROR, "A token is configured and the request lacks it (or it is wrong)."),
    "403": _json(_ERROR, "No token is configured and the client is not on loopback."),
}


def _get(summary: str, schema: str) -> Schema:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": _json(_ref(schema), summary), **REFUSALS},
        }
    }


def _server_action(verb: str, summary: str) -> Schema:
    parameters = [
        {"name": "name", "in": "path", "required": True, "schema": _STRING},
        {"name": "index", "in": "path", "required": True, "schema": {**_INTEGER, "minimum": 0}},
    ]
    return {
        "post": {
            "summary": summary,
            "operationId": verb,
            "parameters": parameters,
            "responses": {
                "200": _json(_ref("Server"), "The server after the change."),
                "404": _json(_ERROR, "No such upstream, or no such server in it."),
                **REFUSALS,
            },
        }
    }


PATHS: dict[str, Schema] = {
    "/api/status": _get("Version, uptime, configuration, workers, last reload.", "Status"),
    "/api/upstreams": _get("Every upstream and the live state of its servers.", "Upstreams"),
    "/api/sites": _get("Every site and its routes.", "Sites"),
    "/api/upstreams/{name}/servers/{index}/drain": _server_action(
        "drain", "Send the server no new requests; its requests in flight finish."
    ),
    "/api/upstreams/{name}/servers/{index}/enable": _server_action(
        "enable", "Put a drained server back in rotation."
    ),
    "/api/reload": {
        "post": {
            "summary": "Load the configuration file again and serve by it.",
            "responses": {
                "200": _json(_ref("ReloadResult"), "Reloaded."),
                "422": _json(
                    _ref("ReloadResult"),
                    "The file has problems (listed in `error`); the running configuration stays.",
                ),
                **REFUSALS,
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document.",
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document."),
                **REFUSALS,
            },
        }
    },
}


def openapi_document(extra_paths: dict[str, Schema] | None = None) -> dict[str, Any]:
    """The whole document; `extra_paths`: the operations of routes added to the API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bastion admin API",
            "version": __version__,
            "description": "See docs/admin.md. Calls need `Authorization: Bearer TOKEN` when "
            "admin.token is set; without a token only loopback clients are served.",
        },
        "paths": {**PATHS, **(extra_paths or {})},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
