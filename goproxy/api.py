"""REST API endpoints of this app (mounted by config/api.py)."""

from rest_framework.routers import DefaultRouter


def register(router: DefaultRouter) -> None:
    """Add this app's viewsets to the API router."""
