"""Re-verification: cached content is checked again, and whatever fails is quarantined.

Bytes at rest can rot (a bad disk, an operator's mistake, a bucket written by someone else),
and a Go module's files can only be judged against the checksum database. Each run (the
`mirror.reverify` task, every 6 h by default: mirror/schedules.py):

1. re-hashes a sample of the content-addressed blobs (`blobs/<alg>/<xx>/<hex>`), least
   recently verified first, about `budget_bytes` in all, against the digest in the key and
   the size recorded when the fill committed it; intact ones get `verified_at`;
2. asks every registered ecosystem for its own findings (`Ecosystem.reverify`);
3. quarantines each failure: under the key's fill lease (so no fill runs meanwhile, and a
   key whose fill holds a live lease is skipped, to be checked again next run) the bad bytes
   are copied to `quarantine/<time>/<key>` (best effort), the object and its index row are
   deleted (it is never served again; the next pull fills it anew from the upstream), and a
   QuarantinedObject row and an ERROR log line report it.

The admin and the API count QuarantinedObject rows (there is no metrics endpoint yet).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from . import documents, ecosystems, leases
from .digests import ALGORITHMS, InvalidDigest, parse_digest
from .ecosystems import Finding
from .models import FillLease, QuarantinedObject, StoredObject
from .storage import ObjectNotFound, Storage, check_key, get_storage

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read at a time: memory stays bounded whatever the object's size
BLOB_PREFIX = "blobs/"
QUARANTINE_PREFIX = "quarantine"


@dataclass(frozen=True)
class _Sampled:
    pk: int
    key: str
    size: int
    upstream_id: int | None


def run(budget_bytes: int | None = None) -> list[QuarantinedObject]:
    """One re-verification run (see the module docstring); returns what it quarantined.

    Args:
        budget_bytes: bytes to re-hash in the core's sample, and again for each ecosystem;
            default settings.MIRROR_REVERIFY_BYTES; 0 checks nothing.
    """
    budget = settings.MIRROR_REVERIFY_BYTES if budget_bytes is None else budget_bytes
    if budget <= 0:
        return []
    storage = get_storage()
    findings = list(check_blobs(storage, budget))
    for ecosystem in ecosystems.all_ecosystems():
        try:
            findings.extend(ecosystem.reverify(budget))
        except Exception:  # one ecosystem's failure must not stop the others' checks
            log.exception("re-verification of %s content failed", ecosystem.kind)
    quarantined = []
    for finding in findings:
        try:
            if finding.namespace:
                row = quarantine_document(finding)
            else:
                row = quarantine(storage, finding)
        except Exception:  # storage or database trouble with one object: go on with the rest
            log.exception("could not quarantine %s (%s)", finding.key, finding.reason)
            continue
        if row is not None:
            quarantined.append(row)
    log.info("re-verification: %d finding(s), %d quarantined", len(findings), len(quarantined))
    return quarantined


def check_blobs(storage: Storage, budget: int) -> Iterator[Finding]:
    """Re-hash a sample of blobs (at least one, then as many as fit in `budget` bytes)."""
    for sampled in _sample(budget):
        try:
            problem = _problem(storage, sampled.key, sampled.size)
        except ObjectNotFound:
            # Not corrupt, gone: a stale index row (the object is filled again when pulled).
            log.warning("re-verification: %s is indexed but not in storage", sampled.key)
            StoredObject.objects.filter(pk=sampled.pk).delete()
            continue
        except Exception:  # unreadable now (an S3 or disk outage): checked again next run
            log.exception("re-verification could not read %s", sampled.key)
            continue
        if problem is None:
            StoredObject.objects.filter(pk=sampled.pk).update(verified_at=timezone.now())
        else:
            yield Finding(sampled.key, problem, sampled.upstream_id)


def _sample(budget: int) -> list[_Sampled]:
    """The blobs to check, chosen before any is checked (a write to the table while reading
    it in batches may show a row twice on SQLite)."""
    rows = (
        StoredObject.objects.filter(key__startswith=BLOB_PREFIX)
        .order_by(F("verified_at").asc(nulls_first=True), "pk")
        .values_list("pk", "key", "size", "upstream_id")
    )
    sample: list[_Sampled] = []
    spent = 0
    for pk, key, size, upstream_id in rows.iterator(chunk_size=500):
        if _digest_of_key(key) is None:
            continue
        if sample and spent + size > budget:
            break
        spent += size
        sample.append(_Sampled(pk, key, size, upstream_id))
    return sample


def _digest_of_key(key: str) -> str | None:
    """`blobs/sha256/ab/ab...` -> `sha256:ab...`; None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "blobs" or parts[1] not in ALGORITHMS:
        return None
    digest = f"{parts[1]}:{parts[3]}"
    try:
        parse_digest(digest)
    except InvalidDigest:
        return None
    return digest if parts[2] == parts[3][:2] else None


def _problem(storage: Storage, key: str, size: int) -> str | None:
    """Why the stored blob is bad (digest or size), or None if it is intact.

    Raises ObjectNotFound, or the storage's own error when it cannot be read."""
    digest = _digest_of_key(key)
    assert digest is not None
    algorithm = digest.split(":", 1)[0]
    hasher = hashlib.new(algorithm)
    read = 0
    with storage.open(key) as stream:
        while read <= size and (chunk := stream.read(CHUNK)):  # a byte past `size` is enough
            hasher.update(chunk)
            read += len(chunk)
    if read != size:
        return f"size: {read}{'+' if read > size else ''} bytes stored, {size} expected"
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != digest:
        return f"digest: stored bytes hash to {actual}"
    return None


def quarantine(storage: Storage, finding: Finding) -> QuarantinedObject | None:
    """Take a bad object out of the cache (see the module docstring); None when skipped."""
    lease = leases.claim(finding.key)
    if lease is None:
        log.warning("re-verification skips %s: a fill holds its lease", finding.key)
        return None
    try:
        return _quarantine(storage, finding, lease)
    finally:
        leases.release(lease)


def _quarantine(storage: Storage, finding: Finding, lease: FillLease) -> QuarantinedObject | None:
    key = finding.key
    size = storage.stat(key)
    if size is None:
        log.warning("re-verification: %s was already removed", key)
        return None
    if _digest_of_key(key) is not None:
        # Under the lease: the object may have been replaced since it was hashed.
        indexed = StoredObject.objects.filter(key=key).values_list("size", flat=True).first()
        if _problem(storage, key, size if indexed is None else indexed) is None:
            return None
    kept = _copy(storage, key, lease)
    storage.delete(key)
    StoredObject.objects.filter(key=key).delete()
    row = QuarantinedObject.objects.create(
        key=key,
        upstream_id=finding.upstream_id,
        size=size,
        reason=finding.reason[:2000],
        quarantine_key=kept,
    )
    log.error("quarantined %s: %s (bad bytes kept at %s)", key, finding.reason, kept or "-")
    return row


def quarantine_document(finding: Finding) -> QuarantinedObject | None:
    """Take a cached document (mirror/documents.py) that failed re-verification out of the
    cache, as `quarantine` does an object: its body kept under `quarantine/`, a
    QuarantinedObject row (keyed `documents/NAMESPACE/KEY`) and an ERROR line. None when it
    was gone already."""
    namespace, key, reason = finding.namespace, finding.key, finding.reason
    body = documents.peek(namespace, key)
    if body is None or not documents.purge(namespace, key):
        return None
    name = f"documents/{namespace}/{key}"
    kept = quarantine_key(name)
    try:
        writer = get_storage().writer(kept)
        writer.write(body)
        writer.commit()
    except Exception as e:  # best effort: the document is forgotten in any case
        log.warning("could not keep a quarantine copy of %s: %s", name, e)
        kept = ""
    row = QuarantinedObject.objects.create(
        key=name[:512],
        upstream_id=finding.upstream_id,
        size=len(body),
        reason=reason[:2000],
        quarantine_key=kept,
    )
    log.error("quarantined %s: %s (bad bytes kept at %s)", name, reason, kept or "-")
    return row


def quarantine_key(key: str, now: dt.datetime | None = None) -> str:
    """Where the bad bytes of `key` are kept: `quarantine/<UTC time>/<key>`, or the key's
    SHA-256 in place of a key too long to nest."""
    stamp = (now or timezone.now()).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        return check_key(f"{QUARANTINE_PREFIX}/{stamp}/{key}")
    except ValueError:
        return f"{QUARANTINE_PREFIX}/{stamp}/{hashlib.sha256(key.encode()).hexdigest()}"


def _copy(storage: Storage, key: str, lease: FillLease) -> str:
    """Copy the object to its quarantine key; "" if that failed (the delete goes ahead)."""
    target = quarantine_key(key)
    renew_every = settings.MIRROR_FILL_LEASE_SECONDS / 3
    renewed = time.monotonic()
    try:
        writer = storage.writer(target)
    except OSError as e:
        log.warning("could not keep a quarantine copy of %s: %s", key, e)
        return ""
    try:
        with storage.open(key) as stream:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
                if time.monotonic() - renewed > renew_every:
                    leases.renew(lease)
                    renewed = time.monotonic()
        writer.commit()
    except Exception as e:  # best effort: the bad object leaves the cache in any case
        writer.abort()
        log.warning("could not keep a quarantine copy of %s: %s", key, e)
        return ""
    return target
