"""The REST API under /api/v1/ (DRF): prewarm jobs, cache contents, freshness control.

`auth` (tokens and scopes), `schema` (OpenAPI), `errors` (one error shape), and the core's
endpoints (`views`); the protocol apps add theirs (registries/api.py, goproxy/api.py) and
config/api.py puts them under one router.
"""
