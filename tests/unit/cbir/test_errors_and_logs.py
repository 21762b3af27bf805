from __future__ import annotations

import json
import logging

from cbir.logs import JsonFormatter, KeyValueFormatter
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
