"""What the stack exposes and what it writes down: every listening socket of every process the
launcher started is on loopback (Milvus's documented exceptions aside), and no secret reaches
any log line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import psutil
import pytest

from cbir.stack.launcher import Launcher
from tests.integration.conftest import TEST_API_KEY

pytestmark = pytest.mark.integration


def loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (::ffff:127.0.0.1, as Java binds)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_every_listening_socket_is_on_loopback_but_milvus_s_documented_ports(
    launcher: Launcher,
) -> None:
    exposed: list[str] = []
    seen = 0
    for service in launcher.services:
        pid = service.process.pid
        assert pid is not None, f"{service.name} is not running"
        # Milvus 2.3 binds its gRPC ports on every interface and has no setting against it
        # (README, "The local stack"): those are listed, and nothing else may be
        allowed = {p.number for p in service.ports if p.all_interfaces}
        for process in process_tree(pid):
            for conn in process.net_connections(kind="inet"):
                if conn.status != psutil.CONN_LISTEN:
                    continue
                seen += 1
                if not loopback(conn.laddr.ip) and conn.laddr.port not in allowed:
                    exposed.append(f"{service.name} ({process.name()}): {conn.laddr}")
    assert seen >= len(launcher.services)
    assert not exposed, exposed


def test_writes_need_the_key_and_no_secret_reaches_a_log_line(
    launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    settings = launcher.settings
    api = settings.api
    with httpx.Client(base_url=f"http://{api.host}:{api.port}", timeout=30) as client:
        photo = indexed_flowers[0].read_bytes()
        anonymous = client.post("/images", files={"image": ("a.jpg", photo)})
        wrong = client.post(
            "/images", files={"image": ("a.jpg", photo)}, headers={"X-API-Key": "guess"}
        )
        assert (anonymous.status_code, wrong.status_code) == (401, 403)
        right = client.post(
            "/images", files={"image": ("a.jpg", photo)}, headers={"X-API-Key": TEST_API_KEY}
        )
        assert right.status_code in (200, 202)
    secrets = {
        "API key": TEST_API_KEY,
        "MinIO secret": settings.minio.secret_key.get_secret_value(),
        "MySQL password": settings.mysql.password.get_secret_value(),
    }
    logs = sorted((settings.stack.resolved_data_dir / "logs").glob("*.log"))
    assert logs
    leaks = [
        f"{name} in {log.name}"
        for log in logs
        for name, secret in secrets.items()
        if secret in log.read_text(errors="replace")
    ]
    assert not leaks, leaks
