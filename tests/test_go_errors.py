"""The Go views' answers to the core's capacity errors, made real through settings: a cache
below its free-space floor is a 507, a process with no fill slot left a 503 with Retry-After.
(That HEAD error answers have no body is shown through gunicorn in test_go_trust.py: Django's
test client drops HEAD bodies itself.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from mirror.models import Upstream
from mirror.upstreams import forget

pytestmark = pytest.mark.django_db
ZIP = "/example.com/capacity/@v/v1.0.0.zip"


@pytest.fixture(autouse=True)
def go_upstream() -> Iterator[None]:
    # Never reached: both faults stop the fill before it asks the upstream.
    Upstream.objects.create(name="proxy", kind="go", url="http://127.0.0.1:9")
    forget()
    yield
    forget()


def test_storage_below_its_floor_is_507() -> None:
    with override_settings(MIRROR_MIN_FREE_BYTES=1 << 62, MIRROR_GO_VERIFY="off"):
        get = Client().get(ZIP)
        head = Client().head(ZIP)
    assert get.status_code == 507 and b"storage full" in get.content
    assert head.status_code == 507


def test_no_fill_slot_is_503_with_retry_after() -> None:
    with override_settings(MIRROR_MAX_FILLS=0, MIRROR_FILL_QUEUE_SECONDS=0):
        get = Client().get(ZIP)
        head = Client().head(ZIP)
    assert get.status_code == 503 and get["Retry-After"] == "1"
    assert head.status_code == 503 and head["Retry-After"] == "1"
