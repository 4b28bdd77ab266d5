"""Prewarm for container images: the "image" ecosystem of mirror/ecosystems.py.

An image is warmed through the code a client pull runs, the way containerd pulls: the tag
asked as a HEAD (tags.by_tag), manifests by digest (manifests.fetch_by_digest), blobs through
the fill (blobs.get_blob). So a prewarm and a pull of the same blob at once fetch it once, and
what a prewarm stores is served exactly as if a client had pulled it. A prewarm is not a pull:
the HEAD and by-digest paths count no tag or manifest pulls, so that popularity (`popular`,
and the platforms it reports) is what clients pulled, never what the refresh itself warmed.

Tags are cached per accepted manifest types (formats.accept_key): warming the tag for one
`Accept` list does not serve a client sending another. The tag is warmed under the lists the
real clients send (seen on the wire, see CLIENT_ACCEPTS), and under any other list a client
already used for it: one HEAD each at most (none within the tag's TTL unless refreshing).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from django.db.models import Max, Sum

from mirror.content import chunks_of
from mirror.ecosystems import Finding, InvalidReference, Popular, Progress, Target
from mirror.errors import UpstreamNotFound
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from . import blobs, eviction, links, manifests, routing, tags
from .errors import RegistryError
from .formats import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Parsed,
    accept_key,
    parse_manifest,
)
from .models import Manifest, Tag, TagHistory
from .names import check_digest, check_name, check_tag

DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
# containers/image (podman, skopeo, buildah, CRI-O) GETs tags with
# manifest.DefaultRequestedManifestMIMETypes, one Accept header each (seen from podman 4.3 and
# skopeo 1.9); Docker's classic puller and go-containerregistry name the same manifest types.
CONTAINERS_IMAGE_ACCEPT = [
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
    DOCKER_LIST,
    OCI_INDEX,
]
# containerd's resolver (ctr, nerdctl, Kubernetes' CRI, Docker with the containerd image
# store) HEADs tags with one header of these (seen from containerd 1.6), `*/*` included.
CONTAINERD_ACCEPT = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"]
CLIENT_ACCEPTS = (CONTAINERS_IMAGE_ACCEPT, CONTAINERD_ACCEPT)

MAX_REFERENCE = 512
# Architectures as users often write them, and the variant a platform has when it names none.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}
_DEFAULT_VARIANT = {"amd64": "v1", "arm64": "v8"}
_PLATFORM_PART = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Build attestations sit in indexes beside the images; no client pulls them to run an image.
_ATTESTATION = ("vnd.docker.reference.type", "attestation-manifest")


@dataclass(frozen=True)
class ImageReference:
    """A parsed, routed image reference."""

    route: routing.Route
    tag: str | None
    digest: str | None

    def client_form(self) -> str:
        """The reference as a client of this mirror writes it (`alpine:3.19`,
        `ghcr.io/acme/tool:v1`, `nginx@sha256:...`)."""
        text = routing.client_name(self.route.upstream, self.route.repository)
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(reference: str) -> ImageReference:
    """Parse `[prefix/]name[:tag][@digest]` (tag `latest` when neither is given) and route it
    as a pull of that name would be. Raises InvalidReference."""
    text = reference.strip()
    if not text or len(text) > MAX_REFERENCE:
        raise InvalidReference(f"an image reference has 1 to {MAX_REFERENCE} characters")
    rest, at, digest = text.partition("@")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
    try:
        check_name(name)
        if tag is not None:
            check_tag(tag)
        if at:
            check_digest(digest)
        route = routing.route(name)
    except RegistryError as e:
        raise InvalidReference(_explain(e)) from None
    if tag is None and not at:
        tag = "latest"
    return ImageReference(route, tag, digest or None)


def _explain(e: RegistryError) -> str:
    hints = {
        "NAME_INVALID": "invalid repository name (lower-case letters, digits, '.', '_', '-' "
        "and '/' between parts; no registry port)",
        "TAG_INVALID": "invalid tag (up to 128 letters, digits, '_', '.', '-')",
    }
    return hints.get(e.code, e.message)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str  # "" matches every variant of the architecture

    def matches(self, platform: dict[str, Any]) -> bool:
        """Whether an index descriptor's `platform` is this one."""
        if (platform.get("os"), platform.get("architecture")) != (self.os, self.architecture):
            return False
        if not self.variant:
            return True
        return _variant(self.architecture, str(platform.get("variant") or "")) == _variant(
            self.architecture, self.variant
        )


def _variant(architecture: str, variant: str) -> str:
    return variant or _DEFAULT_VARIANT.get(architecture, "")


def parse_platform(text: str) -> Platform:
    """`os/architecture[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`. Raises
    InvalidReference."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(_PLATFORM_PART.match(p) for p in parts):
        raise InvalidReference(
            f"invalid platform {text[:100]!r}: expected os/architecture[/variant], "
            "e.g. linux/amd64 or linux/arm64/v8"
        )
    architecture = _ARCH_ALIASES.get(parts[1], parts[1])
    return Platform(parts[0], architecture, parts[2] if len(parts) == 3 else "")


def platform_name(platform: dict[str, Any]) -> str:
    """`os/architecture[/variant]` of an index descriptor's platform."""
    parts = [str(platform.get("os", "")), str(platform.get("architecture", ""))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


class ImageEcosystem:
    """Container images for the core's prewarm, refresh and re-verification."""

    kind = "image"

    def resolve(self, reference: str) -> Target:
        parsed = parse_reference(reference)
        return Target(parsed.client_form(), parsed.route.upstream.id)

    def warm(self, reference: str, platforms: list[str], refresh: bool, progress: Progress) -> None:
        """Warm the tag (under every client's Accept list) or digest, the manifests of the
        chosen platforms of an index ([]: all but attestations), and their config and layer
        blobs; a blob already stored counts as done without being read."""
        parsed = parse_reference(reference)
        warmer = _Warmer(parsed.route, [parse_platform(p) for p in platforms], progress)
        for root in _roots(parsed, refresh):
            warmer.plan(root)
        warmer.fetch_blobs()

    def popular(self, since: dt.datetime, limit: int) -> list[Popular]:
        """The tags pulled most (pull counts summed over the tag's Accept lists) among those
        pulled since `since`, with the platforms whose manifests clients pulled from the
        indexes the tag pointed to since then (none known: all)."""
        upstreams = {u.id: u for u in upstreams_of_kind("oci") if _addressable(u)}
        rows = (
            Tag.objects.filter(
                last_pull__gte=since, pull_count__gt=0, repository__upstream_id__in=upstreams
            )
            .values("repository_id", "repository__name", "repository__upstream_id", "name")
            .annotate(pulls=Sum("pull_count"), last=Max("last_pull"))
            .order_by("-pulls", "-last", "repository_id", "name")[:limit]
        )
        found = []
        for row in rows:
            name = routing.client_name(
                upstreams[row["repository__upstream_id"]], row["repository__name"]
            )
            platforms = _pulled_platforms(row["repository_id"], row["name"], since)
            found.append(Popular(f"{name}:{row['name']}", platforms))
        return found

    def reverify(self, budget_bytes: int) -> Iterable[Finding]:
        """Nothing of its own: image content is blobs and manifests named by their digests,
        which the core re-verifies by digest (mirror/reverify.py); manifests in the database
        were verified against their digest before they were stored."""
        return []

    # Eviction (mirror/eviction.py): tags, manifests and blobs per repository.
    eviction_units = staticmethod(eviction.eviction_units)
    evict = staticmethod(eviction.evict)
    referenced = staticmethod(eviction.referenced)


def _addressable(upstream: UpstreamInfo) -> bool:
    """Whether clients can name this upstream's repositories without `?ns=`."""
    return upstream.is_default or bool(upstream.prefix)


def _pulled_platforms(repository_id: int, tag: str, since: dt.datetime) -> tuple[str, ...]:
    digests = set(
        Tag.objects.filter(repository_id=repository_id, name=tag).values_list("digest", flat=True)
    )
    digests.update(
        TagHistory.objects.filter(
            repository_id=repository_id, name=tag, last_seen__gte=since
        ).values_list("digest", flat=True)
    )
    by_child: dict[str, str] = {}
    for index in Manifest.objects.filter(digest__in=digests, media_type__in=INDEX_TYPES):
        for descriptor in parse_manifest(bytes(index.body), index.media_type).descriptors:
            if "platform" in descriptor and not _is_attestation(descriptor):
                by_child[descriptor["digest"]] = platform_name(descriptor["platform"])
    pulled = Manifest.objects.filter(
        digest__in=by_child, pull_count__gt=0, last_pull__gte=since
    ).values_list("digest", flat=True)
    return tuple(sorted({by_child[digest] for digest in pulled}))


def _is_attestation(descriptor: dict[str, Any]) -> bool:
    platform = descriptor.get("platform") or {}
    annotations = descriptor.get("annotations") or {}
    return (
        annotations.get(_ATTESTATION[0]) == _ATTESTATION[1]
        or platform.get("os") == "unknown"
        or platform.get("architecture") == "unknown"
    )


def _offers(index: Parsed) -> str:
    names = sorted(
        {platform_name(d["platform"]) for d in index.descriptors if "platform" in d}
        - {"unknown/unknown"}
    )
    return f"the index has {', '.join(names)}" if names else "the index names no platforms"


def _roots(parsed: ImageReference, refresh: bool) -> Iterator[Manifest]:
    """The top manifests to warm: the digest's, or what the tag points to under each Accept
    list (the same manifest, normally)."""
    route = parsed.route
    if parsed.digest:
        yield _manifest(route, parsed.digest)
        return
    assert parsed.tag is not None
    seen = set()
    for accept, required in _accepts(route, parsed.tag):
        try:
            answer = tags.by_tag(route, parsed.tag, accept, head=True, revalidate=refresh)
        except UpstreamNotFound:
            # A list some client once used, answered 404 now (e.g. no single manifest of an
            # index): its cached answer was dropped, as a pull would; clients' own lists
            # must work.
            if required:
                raise
            continue
        if answer.digest not in seen:
            seen.add(answer.digest)
            yield _manifest(route, answer.digest)


def _manifest(route: routing.Route, digest: str) -> Manifest:
    """A manifest stored and confirmed under this name, else fetched under it (once for
    concurrent callers), without counting a pull."""
    manifest = manifests.stored(digest)
    if manifest is not None and links.is_linked(route, digest, MANIFEST):
        return manifest
    return manifests.fetch_by_digest(route, digest)


def _accepts(route: routing.Route, tag: str) -> Iterator[tuple[list[str], bool]]:
    """Accept lists to warm the tag under: the real clients', then those other clients used
    for this tag already; with whether the tag must exist under it."""
    keys = set()
    for accept in CLIENT_ACCEPTS:
        keys.add(accept_key(accept))
        yield accept, True
    known = Tag.objects.filter(
        repository__upstream_id=route.upstream.id, repository__name=route.repository, name=tag
    ).values_list("accept_key", flat=True)
    for key in sorted(set(known) - keys - {""}):  # '': rows from before accept keys
        yield ([] if key == "*" else key.split(",")), False


class _Warmer:
    """Walks manifests under one name, then fetches the blobs they need, once each."""

    def __init__(self, route: routing.Route, platforms: list[Platform], progress: Progress) -> None:
        self.route = route
        self.platforms = platforms
        self.progress = progress
        self.blobs: dict[str, int] = {}  # digest -> size, in manifest order
        self._manifests: set[str] = set()

    def plan(self, manifest: Manifest) -> None:
        """Take in a manifest: an index's chosen children (fetched now), or an image's
        config and layers (counted into the total, fetched by `fetch_blobs`)."""
        if manifest.digest in self._manifests:
            return
        self._manifests.add(manifest.digest)
        body = bytes(manifest.body)
        parsed = parse_manifest(body, manifest.media_type)
        if parsed.media_type in INDEX_TYPES:
            wanted = [d for d in parsed.descriptors if self._wanted(d)]
            if self.platforms and not wanted:
                raise InvalidReference(f"no image for the platforms asked; {_offers(parsed)}")
            for descriptor in wanted:
                self.progress.check()
                self.plan(_manifest(self.route, descriptor["digest"]))
            return
        document = json.loads(body)
        for descriptor in (document["config"], *document["layers"]):
            if descriptor["digest"] not in self.blobs:
                self.blobs[descriptor["digest"]] = descriptor["size"]
                self.progress.add_total(descriptor["size"])

    def _wanted(self, descriptor: dict[str, Any]) -> bool:
        if _is_attestation(descriptor):
            return False
        if not self.platforms:
            return True
        platform = descriptor.get("platform")
        return platform is not None and any(p.matches(platform) for p in self.platforms)

    def fetch_blobs(self) -> None:
        for digest, size in self.blobs.items():
            self.progress.check()
            self._blob(digest, size)

    def _blob(self, digest: str, size: int) -> None:
        """A stored blob is done as it is (nothing is opened); a miss is read to its end,
        so that the fill completes, checking for cancellation at every chunk."""
        content = blobs.get_blob(self.route, digest)
        if content.cache == "HIT":
            self.progress.add_done(size)
            return
        with closing(chunks_of(content)) as chunks:
            for chunk in chunks:
                self.progress.add_done(len(chunk))
                self.progress.check()
