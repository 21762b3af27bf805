from __future__ import annotations

import json
import logging

from cbir.logs import FoldClientRepeats, JsonFormatter, KeyValueFormatter
from cbir.stack.errors import StackError


def test_stack_error_names_service_reason_fix_and_log() -> None:
    error = StackError("kafka", "exited while starting", "install Java 17", "line one\nline two")
    text = str(error)
    assert text.startswith("kafka: exited while starting\n  fix: install Java 17")
    assert "    line one\n    line two" in text


def _record(**fields: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "cbir.test", "levelname": "INFO", "msg": "started"})
    record.__dict__.update(fields)
    return record


def test_key_value_lines_quote_what_needs_it() -> None:
    line = KeyValueFormatter().format(_record(service="kafka", log="/a b/c.log"))
    assert "event=started" in line
    assert "service=kafka" in line
    assert 'log="/a b/c.log"' in line


def test_json_lines_parse() -> None:
    parsed = json.loads(JsonFormatter().format(_record(pid=42)))
    assert parsed["event"] == "started"
    assert parsed["pid"] == 42


def _line(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.makeLogRecord({"name": name, "msg": msg, "levelno": level})


def test_a_clients_repeated_errors_are_folded_into_the_next_waiting_line() -> None:
    now = [0.0]
    fold = FoldClientRepeats(window_s=60, clock=lambda: now[0])
    refused = "FAIL [rdkafka#producer-1]: Connect to ipv4#127.0.0.1:9092 failed"
    assert fold.filter(_line("cbir.kafka.producer", refused))  # the first one is shown
    shown = [fold.filter(_line("cbir.kafka.producer", refused)) for _ in range(240)]
    assert not any(shown)
    assert fold.filter(_line("cbir.kafka.consumer", refused)) is False  # any client's
    waiting = _line("cbir.retry", "waiting", logging.WARNING)
    assert fold.filter(waiting) and waiting.__dict__["client_lines_folded"] == 241
    again = _line("cbir.retry", "waiting", logging.WARNING)
    assert fold.filter(again) and "client_lines_folded" not in again.__dict__  # counted once
    now[0] = 61.0  # past the window: the next error is shown again
    assert fold.filter(_line("cbir.kafka.producer", refused))
    # the project's own lines and a client's info lines are never folded
    assert fold.filter(_line("cbir.ingest", "stopped"))
    assert fold.filter(_line("cbir.kafka.producer", "connected", logging.INFO))
