"""Start-up refusal of Go configurations that would serve modules unverified by accident, or
that name a checksum database with a malformed key (goproxy/checks.py): the check itself,
and the commands `make run` runs (migrate, load_mirror_config, sweep_fills)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from goproxy.checks import check_go_upstreams
from mirror.models import Upstream
from tests.mirror_server import MirrorServer

# The go command's built-in key for sum.golang.org: a valid verifier key.
KEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
GO = '  - {name: proxy, kind: go, url: "https://proxy.golang.org"}\n'
SUMDB = f'  - {{name: sums, kind: gosumdb, sumdb: sum.golang.org, url: "https://sum.golang.org", key: "{KEY}"}}\n'  # noqa: E501


def _ids(**settings: str) -> list[str]:
    with override_settings(**{"MIRROR_CONFIG": "", "MIRROR_GO_VERIFY": "on", **settings}):
        return [message.id for message in check_go_upstreams()]


def _upstream(name: str, kind: str, **fields: object) -> None:
    Upstream.objects.create(name=name, kind=kind, url=f"https://{name}.example", **fields)


@pytest.mark.django_db
def test_go_upstream_without_a_checksum_database_is_refused() -> None:
    _upstream("proxy", "go")
    assert _ids() == ["goproxy.E002"]
    assert _ids(MIRROR_GO_VERIFY="off") == []
    assert _ids(MIRROR_GO_VERIFY="maybe") == ["goproxy.E001", "goproxy.E002"]
    _upstream("sums", "gosumdb", sumdb="sum.golang.org", key=KEY, enabled=False)
    assert _ids() == ["goproxy.E002"]  # a disabled database checks nothing
    Upstream.objects.filter(name="sums").update(enabled=True)
    assert _ids() == []


@pytest.mark.django_db
def test_go_upstreams_that_do_not_verify_need_no_database() -> None:
    _upstream("corp", "go", modules=["corp.example.com"], verify_sums=False)
    _upstream("old", "go", enabled=False)
    _upstream("hub", "oci")
    assert _ids() == []


@pytest.mark.django_db
def test_malformed_verifier_key_is_refused() -> None:
    _upstream("proxy", "go")
    _upstream("sums", "gosumdb", sumdb="sum.golang.org", key=KEY.replace("033de0ae", "033de0af"))
    assert _ids() == ["goproxy.E003"]
    assert _ids(MIRROR_GO_VERIFY="off") == ["goproxy.E003"]


@pytest.mark.django_db
def test_the_file_is_judged_as_it_will_be_loaded(tmp_path: Path) -> None:
    _upstream("proxy", "go")
    fixed = tmp_path / "fixed.yml"
    fixed.write_text(f"upstreams:\n{GO}{SUMDB}")
    assert _ids(MIRROR_CONFIG=str(fixed)) == []  # the database is fixed by loading it
    disabling = tmp_path / "disabling.yml"
    disabling.write_text(f"upstreams:\n{SUMDB.replace('sums,', 'sums, enabled: false,')}")
    _upstream("sums", "gosumdb", sumdb="sum.golang.org", key=KEY)
    assert _ids(MIRROR_CONFIG=str(disabling)) == ["goproxy.E002"]


def test_make_run_refuses_go_without_a_checksum_database(tmp_path: Path) -> None:
    config = tmp_path / "mirror.yml"
    config.write_text(f"upstreams:\n{GO}")
    with pytest.raises(RuntimeError, match="MIRROR_GO_VERIFY=off"):
        MirrorServer(tmp_path / "refused", config).setup()  # at its first step, migrate
    MirrorServer(tmp_path / "off", config, MIRROR_GO_VERIFY="off").setup()
    # The operator adds a checksum database to the file: accepted before it is loaded.
    config.write_text(f"upstreams:\n{GO}{SUMDB}")
    MirrorServer(tmp_path / "off", config).manage("migrate")


def test_make_run_without_a_config_file_still_starts(tmp_path: Path) -> None:
    MirrorServer(tmp_path / "hub", None).manage("migrate")  # no tables yet, no Go upstream
