"""The OpenAPI schema documents the compliance exports: parameters, both file formats and
every error code with an example."""

import pytest

pytestmark = pytest.mark.django_db

ERROR = {"$ref": "#/components/schemas/Error"}
FILTERS = {"audit-logs": {"actor", "action", "market", "user"}, "orders": {"market", "user"},
           "trades": {"market", "user"}, "ledger": {"actor", "action", "user"}}


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("table", FILTERS)
def test_each_export_is_documented(schema, table):
    """Session only, the filters it takes, CSV and JSON Lines bodies, and 400/401/403/429 as the
    Error body with examples; the filters it lacks are documented as UNSUPPORTED_FILTER."""
    operation = schema["paths"][f"/api/v1/compliance/{table}"]["get"]

    assert operation["security"] == [{"cookieAuth": []}]
    assert {p["name"] for p in operation["parameters"]} == {"format", "start", "end", *FILTERS[table]}
    assert set(operation["responses"]["200"]["content"]) == {"text/csv", "application/x-ndjson"}
    for status in ("400", "401", "403", "429"):
        content = operation["responses"][status]["content"]["application/json"]
        assert content["schema"] == ERROR and content["examples"], status
    codes = {example["value"]["code"] for example in operation["responses"]["400"]["content"]["application/json"]
             ["examples"].values()}
    assert {"INVALID_FORMAT", "INVALID_DATE", "INVALID_RANGE", "UNKNOWN_USER"} <= codes
    assert ("UNSUPPORTED_FILTER" in codes) == (table != "audit-logs")
    forbidden = operation["responses"]["403"]["content"]["application/json"]["examples"].values()
    assert {example["value"]["code"] for example in forbidden} == {"COMPLIANCE_ONLY", "API_KEY_NOT_ALLOWED"}
