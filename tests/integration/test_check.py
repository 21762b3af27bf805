"""`cbir check` makes one real request to every service and says which one failed."""

from __future__ import annotations

import pytest

from cbir.adapters.health import check_all
from cbir.settings import RedisSettings, Settings

pytestmark = pytest.mark.integration


def test_every_dependency_answers(stack: Settings) -> None:
    results = check_all(stack)
    assert [r.service for r in results] == ["kafka", "minio", "milvus", "mysql", "redis", "triton"]
    assert all(r.ok for r in results), results
    triton = next(r for r in results if r.service == "triton")
    assert "add_one READY" in triton.detail


def test_a_dead_service_fails_alone_with_the_setting_to_fix(stack: Settings) -> None:
    broken = stack.model_copy(update={"redis": RedisSettings(url="redis://127.0.0.1:1/0")})
    results = {r.service: r for r in check_all(broken)}
    assert not results["redis"].ok
    assert "CBIR_REDIS__URL" in results["redis"].detail
    assert all(r.ok for name, r in results.items() if name != "redis")
