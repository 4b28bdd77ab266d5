"""registries/pins.py: pins are read once per period per process, and at once after a change
made in this process."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mirror.models import Upstream
from registries import pins
from registries.models import Repository, TagPin

pytestmark = pytest.mark.django_db


def test_pins_are_read_once_per_period_and_again_after_forget(settings) -> None:
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 3600
    upstream = Upstream.objects.create(name="hub", kind="oci", url="https://hub.test")
    repository = Repository.objects.create(upstream=upstream, name="library/app")
    pins.forget()
    with CaptureQueriesContext(connection) as queries:
        assert pins.pinned(upstream.pk, "library/app", "1") is None
        assert pins.pinned(upstream.pk, "library/app", "1") is None
    assert len(queries) == 1  # the second lookup is answered from memory
    TagPin.objects.create(repository=repository, name="1", digest="sha256:" + "a" * 64)
    assert pins.pinned(upstream.pk, "library/app", "1") is None  # another process's change
    pins.forget()
    assert pins.pinned(upstream.pk, "library/app", "1") == "sha256:" + "a" * 64
    assert pins.pinned(upstream.pk, "library/app", "2") is None
