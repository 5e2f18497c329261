"""The OpenAPI document: a valid 3.1 document, one path per route, schemas equal to the
TypedDicts the API returns, and docs/admin.md's examples valid against them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from bastion.admin import source
from bastion.admin.api import AdminApi, Route
from bastion.admin.messages import Request, Response
from bastion.admin.metrics import METRICS_OPERATION
from bastion.admin.openapi import SCHEMAS, openapi_document
from tests.unit.admin.test_api import LOCAL, FakeNode

REPO = Path(__file__).resolve().parents[3]
# OpenAPI schema -> the TypedDict of source.py it describes
SHAPES: dict[str, type[Any]] = {
    "Server": source.ServerInfo,
    "Upstream": source.UpstreamInfo,
    "Route": source.RouteInfo,
    "Site": source.SiteInfo,
    "ReloadResult": source.ReloadResult,
    "Worker": source.WorkerInfo,
    "Status": source.StatusInfo,
}


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document())
    validate(openapi_document({"/metrics": {"get": METRICS_OPERATION}}))


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = {
        (route.method.lower(), route.template)
        for route in AdminApi(FakeNode(), FakeNode(), lambda: None).routes
    }
    documented = {
        (method, path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert documented == routes


async def test_extra_routes_join_the_served_document() -> None:
    async def metrics(request: Request, params: dict[str, str]) -> Response:
        return Response(200, b"", "text/plain")

    operation = {"summary": "Metrics.", "responses": {"200": {"description": "Text."}}}
    api = AdminApi(FakeNode(), FakeNode(), lambda: None, (Route("GET", "/metrics", metrics),))
    plain = json.loads((await api.handle(Request("GET", "/api/openapi.json", LOCAL, None))).body)
    assert "/metrics" not in plain["paths"]
    documented = AdminApi(
        FakeNode(), FakeNode(), lambda: None, (Route("GET", "/metrics", metrics, operation),)
    )
    served = await documented.handle(Request("GET", "/api/openapi.json", LOCAL, None))
    document = json.loads(served.body)
    assert document["paths"]["/metrics"] == {"get": operation}
    validate(document)


def test_path_parameters_are_declared() -> None:
    for path, item in openapi_document()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", ())}
            assert declared == names, path


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_schemas_have_the_keys_of_the_typed_dicts(name: str) -> None:
    shape = SHAPES[name]
    schema = SCHEMAS[name]
    assert set(schema["properties"]) == set(shape.__annotations__)
    assert set(schema["required"]) == shape.__required_keys__


def test_every_schema_describes_a_returned_shape() -> None:
    assert set(SCHEMAS) == set(SHAPES) | {"Error", "Upstreams", "Sites"}


def examples() -> list[tuple[str, Any]]:
    """docs/admin.md's JSON examples, each after a `<!-- schema: NAME -->` marker."""
    page = (REPO / "docs" / "admin.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- schema: (\w+) -->\n```json\n(.*?)```", page, re.DOTALL)
    return [(name, json.loads(text)) for name, text in found]


def test_the_docs_show_every_schema() -> None:
    assert {name for name, _ in examples()} == set(SCHEMAS) - {
        "Upstream",
        "Route",
        "Site",
        "Worker",
    }


@pytest.mark.parametrize(("name", "example"), examples(), ids=[n for n, _ in examples()])
def test_docs_examples_match_the_schemas(name: str, example: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", **openapi_document()}
    jsonschema.validate(example, schema)
