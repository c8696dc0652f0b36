"""The OpenAPI schema at /api/schema/ documents every trading and market data endpoint."""

import pytest

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("/api/v1/orders", "post"): "201",
    ("/api/v1/orders", "get"): "200",
    ("/api/v1/orders", "delete"): "202",
    ("/api/v1/orders/{order_id}", "get"): "200",
    ("/api/v1/orders/{order_id}", "delete"): "202",
    ("/api/v1/orders/{order_id}", "patch"): "202",
    ("/api/v1/trades/my", "get"): "200",
    ("/api/v1/trades", "get"): "200",
    ("/api/v1/orderbook/{symbol}", "get"): "200",
    ("/api/v1/ticker/{symbol}", "get"): "200",
    ("/api/v1/klines/{symbol}", "get"): "200",
    ("/api/v1/markets", "get"): "200",
    ("/api/v1/markets/{symbol}", "get"): "200",
    ("/api/v1/assets", "get"): "200",
}
ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_each_endpoint_has_its_schemas_and_examples(schema, path, method):
    """Each operation is in the schema with a success response that has a JSON
    schema and at least one example, a JSON request schema and examples when it
    takes a body, and every documented 4xx/5xx is the Error body with examples."""
    operation = schema["paths"][path][method]
    success = operation["responses"][OPERATIONS[path, method]]["content"]["application/json"]
    assert success["schema"], (path, method)
    assert success.get("examples"), f"{method.upper()} {path}: no response example"
    if method in ("post", "patch"):
        body = operation["requestBody"]["content"]["application/json"]
        assert body["schema"] and body.get("examples"), f"{method.upper()} {path}: request schema or examples missing"
    errors = {status: response for status, response in operation["responses"].items() if status[0] in "45"}
    if path != "/api/v1/assets" and path != "/api/v1/markets":
        assert errors, f"{method.upper()} {path}: no error response documented"
    for status, response in errors.items():
        content = response["content"]["application/json"]
        assert content["schema"] == ERROR and content.get("examples"), (path, method, status)


def test_lists_are_documented_as_pages(schema):
    """The cursor-paginated lists document their page ({next, previous,
    results}) and their cursor and limit parameters, not a bare array."""
    for path in ("/api/v1/orders", "/api/v1/trades/my"):
        operation = schema["paths"][path]["get"]
        page_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][page_ref.rsplit("/", 1)[1]]
        assert set(page["properties"]) == {"next", "previous", "results"}
        assert {"cursor", "limit"} <= {parameter["name"] for parameter in operation["parameters"]}


def test_order_enums_are_in_the_schema(schema):
    """Clients can read the order types, sides and time-in-force values from the request schema."""
    request = schema["components"]["schemas"]["OrderPlaceInputRequest"]["properties"]
    types = schema["components"]["schemas"][request["type"]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert types == ["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                     "TAKE_PROFIT_LIMIT"]
    assert set(request) == {"market", "side", "type", "quantity", "quote_quantity", "price", "stop_price",
                            "time_in_force", "stp_mode", "client_order_id"}
