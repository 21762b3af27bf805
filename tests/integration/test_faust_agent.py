"""A Faust (faust-streaming) worker consumes from the stack's Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cbir.settings import PROJECT_ROOT, Settings
from tests.integration.test_stack_services import create_topic

pytestmark = pytest.mark.integration


def test_faust_agent_consumes_a_topic(stack: Settings, tmp_path: Path) -> None:
    topic = f"test.faust.{uuid.uuid4().hex[:8]}"
    create_topic(stack, topic)
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap_servers})
    expected = [f"event-{i}" for i in range(10)]
    for value in expected:
        producer.produce(topic, value=value.encode())
    assert producer.flush(30) == 0

    out = tmp_path / "received.txt"
    env = {
        **os.environ,
        "PROBE_ID": uuid.uuid4().hex[:8],
        "PROBE_TOPIC": topic,
        "PROBE_BROKER": stack.kafka.bootstrap_servers,
        "PROBE_OUT": str(out),
        "PROBE_DATADIR": str(tmp_path / "faust-data"),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            "tests.integration.faust_probe_app",
            "worker",
            "-l",
            "warn",
            "--without-web",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and worker.poll() is None and len(lines) < len(expected):
        time.sleep(0.5)
        lines = out.read_text().splitlines() if out.exists() else []
    exited_early = worker.poll() is not None
    if not exited_early:
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        output, _ = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        output, _ = worker.communicate()
    log_tail = output.decode(errors="replace")[-3000:]
    assert not exited_early, f"the Faust worker exited early:\n{log_tail}"
    assert lines == expected, log_tail
