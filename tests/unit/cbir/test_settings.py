from __future__ import annotations

from pathlib import Path

import pytest

from cbir.settings import Settings, split_host_port


@pytest.fixture(autouse=True)
def _no_cbir_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CBIR_")]:
        monkeypatch.delenv(name)


def test_nested_environment_variables_set_each_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBIR_KAFKA__BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("CBIR_MYSQL__PASSWORD", "s3cret")
    monkeypatch.setenv("CBIR_STACK__HOME", "/opt/stack")
    monkeypatch.setenv("CBIR_MILVUS__INDEX_TYPE", "DISKANN")
    settings = Settings()
    assert settings.kafka.port == 29092
    assert settings.mysql.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.stack.home == Path("/opt/stack")
    assert settings.stack.resolved_data_dir == Path("/opt/stack/data")
    assert settings.milvus.index_type == "DISKANN"


def test_defaults_point_at_loopback() -> None:
    settings = Settings(_env_file=None)
    assert settings.minio.url == "http://127.0.0.1:9000"
    assert settings.redis.port == 6379
    assert (settings.triton.http_port, settings.triton.grpc_port) == (8000, 8001)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("kafka", ("kafka", 1)),
        ("redis://cache:6380/0", ("cache", 6380)),
        ("http://triton:8000", ("triton", 8000)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address, 1) == expected


def test_the_configuration_page_is_the_settings_table() -> None:
    from cbir.settings import PROJECT_ROOT, settings_markdown

    readme = (PROJECT_ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert settings_markdown() in readme, (
        "docs/CONFIGURATION.md is stale: paste `cbir config --markdown`"
    )
