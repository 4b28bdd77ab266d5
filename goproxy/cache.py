"""Freshness control of the Go cache for operators (API and admin): revalidate a module's
`@v/list` and `@latest` now, purge a module or one version, and forget cached "not found"
answers.

A module's files may be cached under several scopes (public, or private to the upstreams
that owned it when it was fetched: see keys.py); purging covers every scope it is found
under. A version's `.info` and `.mod` are documents, its `.zip` a stored file (and `.info` and
`.mod` of earlier releases may still be stored files): purging forgets both kinds. A fill
running at the moment of a purge may still commit its file afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Q

from mirror import eviction
from mirror.documents import purge as purge_documents
from mirror.errors import UpstreamNotFound
from mirror.models import StoredObject
from mirror.upstreams import upstreams_of_kind

from . import chain, keys, service, sumdb
from .models import ModuleVersion
from .paths import escape
from .verify import check_info

EXTENSIONS = ("info", "mod", "zip")
PRIVATE = "_private/"


@dataclass(frozen=True)
class Refreshed:
    """What the upstreams answer now (None: not found there)."""

    module: str
    versions: list[str] | None
    latest: str | None
    list_cache: str | None  # MISS: fetched now; STALE: the upstreams failed, cached copy kept
    latest_cache: str | None


@dataclass(frozen=True)
class Purged:
    module: str
    versions: int  # ModuleVersion rows
    objects: int  # stored files: .zip in storage, .info and .mod documents
    documents: int  # lists, @latest, checksum-database lookups


def refresh(module: str) -> Refreshed:
    """Revalidate `@v/list` and `@latest` now. Raises UpstreamNotFound when no upstream
    serves the module, UpstreamError when the upstreams fail and nothing is cached."""
    if not chain.route(module).upstreams:
        raise UpstreamNotFound(f"no enabled Go upstream serves {module}")
    versions = latest = list_cache = latest_cache = None
    try:
        listed = service.version_list(module, refresh=True)
        versions, list_cache = listed.body.decode().split(), listed.cache
    except UpstreamNotFound:
        pass
    try:
        named = service.latest(module, refresh=True)
        latest, latest_cache = check_info(named.body, module), named.cache
    except UpstreamNotFound:
        pass
    return Refreshed(module, versions, latest, list_cache, latest_cache)


def purge_module(module: str) -> Purged:
    """Forget every cached version of `module` (files, index rows, checksum-database
    lookups) and its `@v/list` and `@latest`: the next request fetches them anew."""
    stored = _stored_keys(module)
    scopes = {"", chain.route(module).scope} | {_scope_of(key) for key in stored}
    versions = list(ModuleVersion.objects.filter(module=module).values_list("version", flat=True))
    computed = {
        keys.file_key(scope, module, version, ext)
        for scope in scopes
        for version in versions
        for ext in EXTENSIONS
    }
    objects = _delete_files(stored | computed, module) + _purge_small_files(
        module, scopes, versions
    )
    documents = sum(
        purge_documents(namespace, keys.document_key(scope + module))
        for namespace in (service.LIST, service.LATEST)
        for scope in scopes
    )
    for namespace in _sumdb_namespaces():
        documents += purge_documents(namespace, key_prefix=sumdb.lookup_prefix(module))
    rows = ModuleVersion.objects.filter(module=module).delete()[0]
    return Purged(module, rows, objects, documents)


def purge_version(row: ModuleVersion) -> int:
    """Forget one cached version (its files, lookup and index row); how many files were
    stored."""
    scopes = {"", chain.route(row.module).scope}
    objects = _delete_files(
        (
            keys.file_key(scope, row.module, row.version, ext)
            for scope in scopes
            for ext in EXTENSIONS
        ),
        row.module,
        f"{row.module}@{row.version}",
    ) + _purge_small_files(row.module, scopes, [row.version], every_version=False)
    lookup = keys.document_key(sumdb.lookup_prefix(row.module, row.version))
    for namespace in _sumdb_namespaces():
        purge_documents(namespace, lookup)
    row.delete()
    return objects


def purge_not_found(module: str | None = None) -> int:
    """Forget cached "not found" answers (lists, `@latest`, checksum-database lookups) of
    `module`, or of every module; returns how many."""
    count = 0
    if module is None:
        for namespace in (service.LIST, service.LATEST, *_sumdb_namespaces()):
            count += purge_documents(namespace, not_found_only=True)
        return count
    for namespace in (service.LIST, service.LATEST):
        for scope in {"", chain.route(module).scope}:
            key = keys.document_key(scope + module)
            count += purge_documents(namespace, key, not_found_only=True)
    for namespace in _sumdb_namespaces():
        prefix = sumdb.lookup_prefix(module)
        count += purge_documents(namespace, key_prefix=prefix, not_found_only=True)
    return count


def _purge_small_files(
    module: str, scopes: Iterable[str], versions: Iterable[str], *, every_version: bool = True
) -> int:
    """Forget the `.info` and `.mod` documents of `versions` in `scopes` (and, with
    `every_version`, of any version whose key starts with `<scope><module>@`, as versions
    without a zip have no ModuleVersion row); how many there were."""
    scopes, versions = list(scopes), list(versions)
    count = 0
    for namespace in service.SMALL_FILES.values():
        for scope in scopes:
            for version in versions:
                count += purge_documents(namespace, keys.small_file_key(scope, module, version))
            if every_version:
                count += purge_documents(namespace, key_prefix=f"{scope}{module}@")
    return count


def _sumdb_namespaces() -> list[str]:
    return [sumdb.namespace(db) for db in upstreams_of_kind("gosumdb", include_disabled=True)]


def _stored_keys(module: str) -> set[str]:
    """Keys of the module's files in the index of stored objects, in any scope."""
    escaped = escape(module)
    rows = StoredObject.objects.filter(
        Q(key__startswith=f"go/{escaped}/@v/")
        | Q(key__startswith=f"go/{PRIVATE}", key__contains=f"/{escaped}/@v/")
    ).values_list("key", flat=True)
    return {key for key in rows if _module_of(key) == escaped}


def _scope_of(key: str) -> str:
    """`_private/NAME/` of a private module's key, "" for a public one."""
    path = key.removeprefix("go/")
    if not path.startswith(PRIVATE):
        return ""
    return PRIVATE + path[len(PRIVATE) :].split("/", 1)[0] + "/"


def _module_of(key: str) -> str:
    """The escaped module path of a file's key."""
    path = key.removeprefix("go/").removeprefix(_scope_of(key))
    return path.split("/@v/", 1)[0]


def _delete_files(file_keys: Iterable[str], module: str, reference: str = "") -> int:
    """Delete stored files and their index rows, as one recorded purge of `reference` (the
    module by default; mirror/eviction.py); how many were stored."""
    upstreams = chain.route(module).upstreams
    return eviction.delete_objects(
        file_keys,
        kind="module",
        reference=reference or module,
        upstream_id=upstreams[0].id if upstreams else None,
    )
