"""Structured logs: one event per line, as key=value pairs or JSON."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _parts(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, Any]:
    """A record as ordered fields: time, level, logger, event, then its extra fields."""
    extra = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
    return {
        "ts": formatter.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
        **extra,
    }


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n')) else text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = _parts(self, record)
        line = " ".join(f"{k}={_quote(v)}" for k, v in parts.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = _parts(self, record)
        if record.exc_info:
            parts["exception"] = self.formatException(record.exc_info)
        return json.dumps(parts, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log record to stderr in the chosen structured format."""
    # the real stream: Faust redirects sys.stderr into logging, which would loop
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # per-request lines of HTTP clients and librdkafka's connection retries while a broker
    # starts are noise at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("cbir.kafka.admin").setLevel(logging.CRITICAL)
