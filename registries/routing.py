"""Which upstream serves a client's repository name, and under which name there.

- `?ns=HOST` (containerd) selects the upstream whose prefix is HOST.
- A name starting with an upstream's prefix goes there, the prefix removed.
- Anything else goes to the default upstream.
Docker Hub keeps official images under `library/`: one-part names get it there.
Only configured upstreams can come out of this: a client cannot name a host.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from .errors import RegistryError

DOCKER_HUB_PREFIX = "docker.io"


@dataclass(frozen=True)
class Route:
    upstream: UpstreamInfo
    repository: str  # the name at the upstream


def _upstream_name(upstream: UpstreamInfo, name: str) -> str:
    if upstream.prefix == DOCKER_HUB_PREFIX and "/" not in name:
        return f"library/{name}"
    return name


def route(name: str, ns: str | None = None) -> Route:
    upstreams = upstreams_of_kind("oci")
    if ns:
        for upstream in upstreams:
            if upstream.prefix == ns:
                return Route(upstream, _upstream_name(upstream, name))
        raise RegistryError("NAME_UNKNOWN", "no upstream is configured for this ns", {"ns": ns})
    first, _, rest = name.partition("/")
    if rest:
        for upstream in upstreams:
            if upstream.prefix and upstream.prefix == first:
                return Route(upstream, _upstream_name(upstream, rest))
    for upstream in upstreams:
        if upstream.is_default:
            return Route(upstream, _upstream_name(upstream, name))
    raise RegistryError("NAME_UNKNOWN", "no upstream serves this name", {"name": name})


def client_name(upstream: UpstreamInfo, repository: str) -> str:
    """How a client names an upstream's repository: as-is on the default upstream, else in
    the prefix form (`ghcr.io/org/image`)."""
    if upstream.prefix == DOCKER_HUB_PREFIX and repository.startswith("library/"):
        repository = repository.removeprefix("library/")
    if upstream.is_default or not upstream.prefix:
        return repository
    return f"{upstream.prefix}/{repository}"
