"""OpenAPI: every operation documents the errors the API can answer, in its one shape."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class ValidationErrorSerializer(serializers.Serializer):
    """A 400: field names to lists of messages (DRF's shape)."""

    def to_representation(self, instance: Any) -> Any:
        return instance


class AutoSchema(openapi.AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        errors: dict[str, type[serializers.Serializer]] = {
            "400": ValidationErrorSerializer,
            "401": ErrorSerializer,
            "403": ErrorSerializer,
            "503": ErrorSerializer,
        }
        if "{" in self.path:  # a detail path: the object may not exist
            errors["404"] = ErrorSerializer
        for status_code, serializer in errors.items():
            if status_code not in responses:
                responses[status_code] = self._get_response_for_code(serializer, status_code)
        return responses
