"""docker-compose.yml uses the settings' own variable names, and compose accepts it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from pydantic import BaseModel

from cbir.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"


def is_setting(variable: str) -> bool:
    """True when CBIR_<SECTION>__<FIELD> (or CBIR_<FIELD>) names a field of Settings."""
    path = variable.removeprefix("CBIR_").lower().split("__")
    model: type[BaseModel] = Settings
    for depth, name in enumerate(path):
        field = model.model_fields.get(name)
        if field is None:
            return False
        annotation = field.annotation
        if depth < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_every_cbir_variable_in_compose_is_a_setting() -> None:
    variables = set(re.findall(r"\bCBIR_[A-Z0-9_]+", COMPOSE_FILE.read_text()))
    assert len(variables) > 10
    assert {v for v in variables if not is_setting(v)} == set()


def test_is_setting_rejects_unknown_names() -> None:
    assert is_setting("CBIR_KAFKA__BOOTSTRAP_SERVERS")
    assert is_setting("CBIR_LOG_FORMAT")
    assert not is_setting("CBIR_KAFKA__NO_SUCH_FIELD")
    assert not is_setting("CBIR_LOG_FORMAT__X")


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="no docker compose plugin on this machine")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "app", "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "app", "config", "--services"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=True,
    ).stdout.split()
    assert {
        "kafka",
        "minio",
        "etcd",
        "milvus",
        "mysql",
        "redis",
        "triton",
        "init",
        "processors",
        "query-api",
    } <= set(services)


def test_the_app_image_copies_every_package() -> None:
    import tomllib

    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \1$", (PROJECT_ROOT / "Dockerfile").read_text(), re.M))
    assert packages == copied
