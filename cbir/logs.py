"""Structured logs: one event per line, as key=value pairs or JSON."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
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


# the loggers a client library writes through (librdkafka's, by the Kafka adapter)
CLIENT_LOGGERS = ("cbir.kafka.producer", "cbir.kafka.consumer", "cbir.kafka.admin")
# the project's own line while it waits for a service (RetryPolicy)
WAITING = ("cbir.retry", "waiting")


class FoldClientRepeats(logging.Filter):
    """A client library repeats its connection errors (librdkafka: twice a second while a
    broker is away). The first of them passes; the next ones within `window_s` are counted
    instead of printed, and the project's next waiting line carries the count
    (`client_lines_folded`), so that a console shows what is waited for, not the noise."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._shown_at: float | None = None
        self._folded = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if (record.name, record.msg) == WAITING:
                if self._folded:
                    record.client_lines_folded = self._folded
                    self._folded = 0
                return True
            if record.name not in CLIENT_LOGGERS or record.levelno < logging.WARNING:
                return True
            now = self.clock()
            if self._shown_at is not None and now - self._shown_at < self.window_s:
                self._folded += 1
                return False
            self._shown_at = now
            return True


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log record to stderr in the chosen structured format."""
    # the real stream: Faust redirects sys.stderr into logging, which would loop
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(FoldClientRepeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # per-request lines of HTTP clients and librdkafka's connection retries while a broker
    # starts are noise at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("cbir.kafka.admin").setLevel(logging.CRITICAL)
