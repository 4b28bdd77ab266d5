"""OpenAPI: every operation documents exactly the errors it can answer, in the API's shapes
(mirror/api/errors.py), so that a client generated from /api/schema/ (and schemathesis in the
tests) can rely on the status codes:

- 400 where there is input to refuse: a request body, or query parameters the operation
  declares (pagination parameters never fail: bad values fall back to their defaults);
- 401 everywhere, with its `WWW-Authenticate: Bearer` challenge;
- 403 where the operation needs more than the "read" scope (a read token, or a staff session
  without its CSRF token);
- 404 on paths naming an object;
- 414 everywhere, in plain text: the server (config/worker.py) refuses a request line over
  gunicorn's limit before the API sees it;
- 503 everywhere: the database or the task queue is unavailable.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from .auth import required_scope

BODY_METHODS = ("POST", "PUT", "PATCH")

# A 400: DRF's field errors ({"field": ["message"], "field": {"0": ["message"]}}), or one
# {"detail", "code"} for a body that is not JSON.
VALIDATION_ERROR = {
    "type": "object",
    "description": "Messages by field (`non_field_errors`: about the whole input), or "
    "`detail` and `code` for input that could not be read.",
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object"},
            {"type": "string"},
        ]
    },
}


TOO_LONG = {
    "description": "The request line is longer than the server accepts (4094 bytes).",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer TOKEN` (manage.py mirror_token create NAME --scope ...)."""

    target_class = "mirror.api.auth.TokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from `manage.py mirror_token create NAME --scope "
            "read|prewarm|admin`; scopes: read < prewarm < admin.",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    """The admin's session of a staff user (every scope), for the browsable API."""

    target_class = "mirror.api.auth.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class AutoSchema(openapi.AutoSchema):
    def _needed_scope(self) -> str:
        return required_scope(self.method, self.view)

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """Every operation's description ends with the scope it needs (after any description
        a view gave with @extend_schema)."""
        operation = super().get_operation(*args, **kwargs)
        if operation is not None:
            text = operation.get("description", "")
            operation["description"] = f"{text}\n\nScope: `{self._needed_scope()}`.".strip()
        return operation

    def get_auth(self) -> list[dict[str, Any]]:
        """The view's schemes, each once (SPECTACULAR_SETTINGS["SECURITY"] names one again)."""
        unique: list[dict[str, Any]] = []
        for requirement in super().get_auth():
            if requirement not in unique:
                unique.append(requirement)
        return unique

    def _can_refuse_input(self) -> bool:
        if self.method in BODY_METHODS and self.get_request_serializer() is not None:
            return True
        return any(getattr(p, "location", None) == "query" for p in self.get_override_parameters())

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        errors: dict[str, Any] = {"401": ErrorSerializer, "503": ErrorSerializer}
        if self._can_refuse_input():
            errors["400"] = self._validation_error_schema()
        if self._needed_scope() != "read":
            errors["403"] = ErrorSerializer
        if "{" in self.path:  # a path naming an object: it may not exist
            errors["404"] = ErrorSerializer
        for code, body in sorted(errors.items()):
            responses.setdefault(code, self._get_response_for_code(body, code))
        responses.setdefault("414", TOO_LONG)
        return responses

    def _validation_error_schema(self) -> dict[str, Any]:
        component = ResolvedComponent(
            name="ValidationError",
            type=ResolvedComponent.SCHEMA,
            object="ValidationError",
            schema=VALIDATION_ERROR,
        )
        self.registry.register_on_missing(component)
        return component.ref

    def _get_response_headers_for_code(
        self, status_code: str, direction: str = "response"
    ) -> dict[str, Any]:
        headers = super()._get_response_headers_for_code(status_code, direction)
        if status_code == "401":
            headers["WWW-Authenticate"] = {
                "schema": {"type": "string"},
                "required": True,
                "description": 'The challenge: `Bearer realm="entrepot-api"`.',
            }
        return headers
