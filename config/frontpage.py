"""The front page: what a person sees who opens the mirror's URL in a browser.

It says what is mirrored (the enabled upstreams), how to point docker, containerd, podman and
the go command at this host (its name taken from the request), a few cache figures, and where
the admin and the API docs are. Only GET and HEAD of exactly "/" land here; any other method
gets the answer every unknown path gets (the registries' JSON 404), so no protocol path
changes. The template lives beside this module (config/ is not an app, so Django's app loader
does not look there); it is rendered with autoescaping like any other.

The cache figures aggregate the whole object index, so they are computed at most once per
FIGURES_SECONDS per process: a public page must not cost a table scan per hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.core.cache import cache
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.template import Context, Engine

from mirror.models import PrewarmJob, StoredObject, Upstream
from registries.views import not_found

FIGURES_SECONDS = 30
DOCKER_HUB = "docker.io"
_engine = Engine(dirs=[str(Path(__file__).resolve().parent / "templates")])


@dataclass(frozen=True)
class Registry:
    """An OCI prefix as clients name it, and where a client goes when the mirror fails."""

    prefix: str
    origin: str
    default: bool


def frontpage(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return not_found(request)
    host = request.get_host()
    secure = request.is_secure()
    upstreams = list(Upstream.objects.filter(enabled=True).order_by("kind", "position", "name"))
    context = {
        "host": host,
        "url": f"{'https' if secure else 'http'}://{host}",
        "secure": secure,
        "upstreams": upstreams,
        "registries": _registries(upstreams),
        "go": [u for u in upstreams if u.kind == Upstream.Kind.GO],
        "sumdbs": [u for u in upstreams if u.kind == Upstream.Kind.GOSUMDB],
        "example_prefix": _example_prefix(upstreams),
        **_figures(),
    }
    html = _engine.get_template("frontpage.html").render(Context(context))
    return HttpResponse(html, content_type="text/html; charset=utf-8")


def _registries(upstreams: list[Upstream]) -> list[Registry]:
    """One entry per OCI prefix (the default upstream's first); Docker Hub's registry host is
    not its name, the others' is."""
    oci = [u for u in upstreams if u.kind == Upstream.Kind.OCI and u.prefix]
    oci.sort(key=lambda u: not u.is_default)
    return [
        Registry(
            prefix=u.prefix,
            origin="registry-1.docker.io" if u.prefix == DOCKER_HUB else u.prefix,
            default=u.is_default,
        )
        for u in oci
    ]


def _example_prefix(upstreams: list[Upstream]) -> str:
    """A prefix to show a prefixed pull with: a non-default one if any."""
    prefixes = [u.prefix for u in upstreams if u.kind == Upstream.Kind.OCI and u.prefix]
    others = [p for p in prefixes if p != DOCKER_HUB]
    return (others or prefixes or ["ghcr.io"])[0]


def _figures() -> dict[str, object]:
    return cache.get_or_set("frontpage:figures", _compute_figures, FIGURES_SECONDS)


def _compute_figures() -> dict[str, object]:
    names = dict(Upstream.objects.values_list("pk", "name"))
    rows = (
        StoredObject.objects.values("upstream")
        .annotate(objects=Count("pk"), size=Sum("size"))
        .order_by("upstream")
    )
    per_upstream = [
        {
            "name": names.get(row["upstream"], "(removed upstream)"),
            "objects": row["objects"],
            "size": row["size"] or 0,
        }
        for row in rows
    ]
    active = (PrewarmJob.Status.QUEUED, PrewarmJob.Status.RUNNING)
    return {
        "per_upstream": per_upstream,
        "total_objects": sum(r["objects"] for r in per_upstream),
        "total_size": sum(r["size"] for r in per_upstream),
        "jobs_running": PrewarmJob.objects.filter(status__in=active).count(),
    }
