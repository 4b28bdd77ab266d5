"""Go modules in the core's prewarm (mirror/ecosystems.py): item kind "module".

A reference is `module@version`, `module@latest` or `module` (= `@latest`). Warming goes
through the same code as the go command's requests (service.py): `@v/list` and `@latest` as
TTL documents, then `.info` and `.mod` of the version as immutable documents and its `.zip`
through the fill path, each checked against the checksum database. The mirror caches that
lookup on the way, and then the tiles the go command reads to check it: the go command can
later download and verify the module through the mirror with every upstream stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db.models import Sum

from mirror.content import MemoryContent, StoredContent
from mirror.ecosystems import Finding, InvalidReference, Popular, Progress, Target
from mirror.errors import UpstreamNotFound
from mirror.models import CachedDocument

from . import chain, eviction, reverify, service, sumdb
from .models import ModuleVersion
from .paths import InvalidPath, semver_key, split_reference
from .verify import check_info

FILES = ("info", "mod", "zip")


def parse(reference: str) -> tuple[str, str]:
    """(module, version or "latest") of a reference; InvalidReference when it is malformed."""
    try:
        return split_reference(reference)
    except InvalidPath as e:
        raise InvalidReference(str(e)) from None


class ModuleEcosystem:
    kind = "module"

    def resolve(self, reference: str) -> Target:
        module, version = parse(reference)
        route = chain.route(module)
        if not route.upstreams:
            why = "its private upstreams are disabled" if route.private else "none is enabled"
            raise InvalidReference(f"no Go upstream serves {module} ({why})")
        return Target(f"{module}@{version}", route.upstreams[0].id)

    def warm(self, reference: str, platforms: list[str], refresh: bool, progress: Progress) -> None:
        module, version = parse(reference)
        versions = [version] if version != "latest" else _latest(module, refresh)
        for each in versions:
            for ext in FILES:
                progress.check()
                _warm_file(module, each, ext, progress)
            _warm_proof(module, each)

    def popular(self, since: dt.datetime, limit: int) -> list[Popular]:
        return [Popular(reference) for reference in popular_references(since, limit)]

    def reverify(self, budget_bytes: int) -> Iterable[Finding]:
        return reverify.run(budget_bytes)

    # Eviction (mirror/eviction.py): module versions.
    eviction_units = staticmethod(eviction.eviction_units)
    evict = staticmethod(eviction.evict)
    referenced = staticmethod(eviction.referenced)


def _latest(module: str, refresh: bool) -> list[str]:
    """The versions `module@latest` means: the one the go command picks from `@v/list` (the
    highest release, else the highest pre-release) and the one `@latest` names (the go
    command's answer when the list is empty). Both documents are cached (revalidated now
    with `refresh`), as the go command asks them."""
    try:
        listed = service.version_list(module, refresh=refresh).body.decode().split()
    except UpstreamNotFound:
        listed = []
    try:
        named = [check_info(service.latest(module, refresh=refresh).body, module)]
    except UpstreamNotFound:
        if not listed:
            raise
        named = []
    releases = [v for v in listed if "-" not in v.split("+")[0]]
    picked = max(releases or listed, key=semver_key, default=None)
    return list(dict.fromkeys([*([picked] if picked else []), *named]))


def _warm_proof(module: str, version: str) -> None:
    """The checksum-database tiles the go command reads to check this version (the lookup
    itself was cached when the files were verified)."""
    if service.expected(chain.route(module), version) is not None:
        db = sumdb.default_database()
        assert db is not None  # expected() needs one
        sumdb.warm_tiles(db, module, version)


def _warm_file(module: str, version: str, ext: str, progress: Progress) -> None:
    """One file as the go command gets it: `.info` and `.mod` kept as documents (verified
    before they are), the zip through the fill path: a committed one is counted unread; a
    fill (ours or one in progress) is read to its verified end, so that its failure is the
    item's."""
    if ext in service.SMALL_FILES:
        size = len(service.small_file(module, version, ext).body)
        progress.add_total(size)
        progress.add_done(size)
        return
    content = service.zip_file(module, version, count=False)
    if isinstance(content, (StoredContent, MemoryContent)):  # committed
        progress.add_total(content.size or 0)
        progress.add_done(content.size or 0)
        return
    if content.size is not None:
        progress.add_total(content.size)
    chunks = iter(content.open())
    try:
        for chunk in chunks:
            if content.size is None:
                progress.add_total(len(chunk))
            progress.add_done(len(chunk))
            progress.check()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def popular_references(since: dt.datetime, limit: int) -> list[str]:
    """The most downloaded module versions since `since`, and `module@latest` for those of
    them whose `@v/list` or `@latest` is cached (ranked by the module's downloads), so that
    the scheduled refresh revalidates what their clients resolve. At most `limit`."""
    recent = ModuleVersion.objects.filter(last_download__gte=since, download_count__gt=0)
    scored: list[tuple[int, str]] = [
        (count, f"{module}@{version}")
        for module, version, count in recent.order_by(
            "-download_count", "module", "version"
        ).values_list("module", "version", "download_count")[:limit]
    ]
    modules = dict(
        recent.values("module")
        .annotate(total=Sum("download_count"))
        .order_by("-total", "module")
        .values_list("module", "total")[:limit]
    )
    for module in _with_cached_lists(modules):
        scored.append((modules[module], f"{module}@latest"))
    scored.sort(key=lambda entry: -entry[0])  # most downloaded first
    return [reference for _, reference in scored[:limit]]


def _with_cached_lists(modules: Iterable[str]) -> list[str]:
    """Those of `modules` whose `@v/list` or `@latest` answer is cached for their route."""
    keys = {service.document_key(chain.route(module)): module for module in modules}
    cached = CachedDocument.objects.filter(
        namespace__in=(service.LIST, service.LATEST), key__in=list(keys), status=200
    ).values_list("key", flat=True)
    return sorted({keys[key] for key in cached if key in keys})
