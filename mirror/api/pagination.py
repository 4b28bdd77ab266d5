"""Pages of the API's lists: `limit` (at most MAX_LIMIT) and `offset`, each bounded, so
that no value a client sends reaches the database as a number it cannot hold (SQLite
integers are 64-bit: `?limit=10**22` was a 500)."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 1000
MAX_OFFSET = 2**62


class Pagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = MAX_LIMIT

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
