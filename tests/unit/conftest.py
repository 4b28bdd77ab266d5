"""The unit tier's database: SQLite in a file, not in memory.

Django's default test database for SQLite is a shared-cache in-memory database, where two
threads writing at once get "database table is locked" at once instead of waiting; the fill
and fetch-once tests write from several threads (fillers, followers), as the server does.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("db") / "unit.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)
