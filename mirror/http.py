"""The upstream HTTP client: pooling, timeouts, auth (Basic and Bearer-token), Retry-After.

One `UpstreamClient` per configured upstream and process; it only ever sends requests to its
upstream's base URL (paths are joined to it), to the token realm that upstream names in its
own challenge, and to redirects that upstream answers with (a registry's blob CDN).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import httpx
from django.conf import settings

from .errors import UpstreamDenied, UpstreamNotFound, UpstreamUnavailable
from .upstreams import UpstreamInfo

log = logging.getLogger(__name__)

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# Token lifetime assumed when the token endpoint gives none (the distribution spec's 60 s).
_DEFAULT_TOKEN_SECONDS = 60


def _timeout(read: float | None = None) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT,
        read=read or settings.MIRROR_UPSTREAM_READ_TIMEOUT,
        write=settings.MIRROR_UPSTREAM_READ_TIMEOUT,
        pool=settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class UpstreamClient:
    """HTTP access to one upstream. Thread-safe; share one per process."""

    def __init__(self, info: UpstreamInfo) -> None:
        self.info = info
        self._http = httpx.Client(
            base_url=info.url,
            timeout=_timeout(),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "entrepot"},
        )
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._uses_bearer = False

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        scope: str = "",
        stream: bool = False,
        metadata: bool = True,
    ) -> httpx.Response:
        """Send a request; return a 2xx/3xx response or raise an Upstream* error.

        Args:
            scope: the token scope this request needs (e.g. `repository:library/alpine:pull`).
            stream: leave the body unread; the caller must close the response.
            metadata: a small answer is expected: use the short read timeout, so that a hung
                upstream turns into a stale answer or an error within seconds.
        """
        if time.monotonic() < self._blocked_until:
            raise UpstreamUnavailable(
                f"{self.info.name} asked us to wait (Retry-After)",
                retry_after=self._blocked_until - time.monotonic(),
            )
        timeout = _timeout(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT if metadata else None)
        for attempt in range(2):
            request = self._http.build_request(
                method,
                path,
                headers=self._with_auth(headers or {}, scope),
                params=params,
                timeout=timeout,
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                raise UpstreamUnavailable(f"{self.info.name}: {type(e).__name__}") from e
            if response.status_code == 401 and attempt == 0 and self._authenticate(response, scope):
                response.close()
                continue
            return self._check(response)
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status < 400:
            return response
        response.close()
        name = self.info.name
        if status in (404, 410):
            raise UpstreamNotFound(f"{name}: {status}")
        if status in (401, 403):
            raise UpstreamDenied(f"{name}: {status}")
        if status == 429:
            retry = _retry_after(response)
            if retry:
                self._blocked_until = time.monotonic() + min(retry, 300)
            raise UpstreamUnavailable(f"{name}: rate-limited (429)", retry_after=retry)
        raise UpstreamUnavailable(f"{name}: upstream answered {status}")

    def _with_auth(self, headers: dict[str, str], scope: str) -> dict[str, str]:
        headers = dict(headers)
        token = self._cached_token(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif not self._uses_bearer and (creds := self.info.credentials()):
            headers["Authorization"] = httpx.BasicAuth(*creds)._auth_header
        return headers

    def _cached_token(self, scope: str) -> str | None:
        with self._lock:
            entry = self._tokens.get(scope)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def _authenticate(self, response: httpx.Response, scope: str) -> bool:
        """Follow a `WWW-Authenticate: Bearer realm=...` challenge; True if a token was got.

        The token is cached under the caller's `scope`, so the next request for that scope
        sends it at once instead of collecting a 401 first.
        """
        challenge = response.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            return False
        self._uses_bearer = True
        creds = self.info.credentials()
        try:
            answer = self._http.get(
                realm,
                params={k: v for k, v in params.items() if k in ("service", "scope")},
                auth=httpx.BasicAuth(*creds) if creds else None,
                timeout=_timeout(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT),
            )
        except httpx.TransportError as e:
            raise UpstreamUnavailable(f"{self.info.name}: token endpoint unreachable") from e
        if answer.status_code != 200:
            if answer.status_code in (401, 403):
                raise UpstreamDenied(f"{self.info.name}: token endpoint refused us")
            raise UpstreamUnavailable(f"{self.info.name}: token endpoint {answer.status_code}")
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise UpstreamUnavailable(f"{self.info.name}: token endpoint gave no token")
        lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_SECONDS)
        # Renew a little before expiry, so that a token never dies mid-request.
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - 10, lifetime / 2))
        return True


_clients: dict[str, tuple[float, UpstreamClient]] = {}
_clients_lock = threading.Lock()


def client_for(info: UpstreamInfo) -> UpstreamClient:
    """The shared client of an upstream (recreated when its configuration changes)."""
    with _clients_lock:
        entry = _clients.get(info.name)
        if entry is None or entry[0] != info.updated:
            if entry is not None:
                entry[1].close()
            entry = (info.updated, UpstreamClient(info))
            _clients[info.name] = entry
        return entry[1]
