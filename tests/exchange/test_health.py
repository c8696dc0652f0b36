"""/health, /health/live, /health/ready and /metrics."""

import functools

import pytest

from exchange import health
from matching import stream
from tests.factories import MarketFactory

pytestmark = pytest.mark.django_db


def test_health_reports_each_dependency_with_its_duration(client, redis_app):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["checks"]) >= {"database", "redis"}
    for check in ("database", "redis"):
        assert body["checks"][check]["status"] == "healthy"
        assert body["checks"][check]["duration_ms"] >= 0


def test_live_and_ready(client, redis_app):
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_ready_is_503_when_redis_is_down(client, redis_down):
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "unhealthy"

    report = client.get("/health")
    assert report.status_code == 503
    assert report.json()["status"] == "unhealthy"
    assert report.json()["checks"]["database"]["status"] == "healthy"
    assert client.get("/health/live").status_code == 200


def test_a_failing_non_critical_check_only_degrades(client, redis_app, monkeypatch):
    def broken():
        raise RuntimeError("kafka unreachable")

    monkeypatch.setattr(health, "CHECKS", health.CHECKS + [health.Check("kafka", broken, critical=False)])

    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["kafka"] == {
        "status": "unhealthy", "error": "RuntimeError: kafka unreachable",
        "duration_ms": response.json()["checks"]["kafka"]["duration_ms"],
    }
    assert client.get("/health/ready").status_code == 200


def test_metrics_expose_prometheus_counters(client):
    client.get("/health/live")
    metrics = client.get("/metrics").content.decode()
    assert "django_http_requests_total_by_method_total" in metrics


def test_matchers_heartbeats_are_reported_and_a_stale_one_degrades(client, redis_app, settings):
    market = MarketFactory()
    stream.heartbeat_write(market.symbol, sequence=42, pid=1, backlog=0)

    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["checks"]["matchers"]["markets"][market.symbol]["sequence"] == 42
    assert body["checks"]["matchers"]["markets"][market.symbol]["alive"] is True

    redis_app.delete(stream.heartbeat_key(market.symbol))
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert market.symbol in response.json()["checks"]["matchers"]["error"]
    assert client.get("/health/ready").status_code == 200
