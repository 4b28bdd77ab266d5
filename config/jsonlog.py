"""The JSON log format (LOG_FORMAT=json), for Django's logging (settings.LOGGING) and gunicorn's
own lines (config/gunicorn.py). Imports no Django: gunicorn's master loads it.

One object per line: `time`, `level`, `logger`, `message`, and any extra attributes of the
record (`request_id` while a request is handled, the access log's fields, `exc_info`).
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# Record attributes never written: the standard ones not in the format, and Django's `request`
# (django.request's records carry it; its repr has the query string, where tokens travel).
_LEFT_OUT = [*RESERVED_ATTRS, "request"]


def formatter() -> JsonFormatter:
    return JsonFormatter(
        ["asctime", "levelname", "name", "message"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        reserved_attrs=_LEFT_OUT,
    )


class GunicornLogger(glogging.Logger):
    """gunicorn's error and access logs, as configured (`errorlog`, `accesslog`), in JSON."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter())
