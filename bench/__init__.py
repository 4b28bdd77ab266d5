"""`make bench`: Entrepot against CNCF distribution's pull-through cache, side by side.

`python -m bench.run` starts an upstream registry, a counting proxy in front of it, the mirror
(gunicorn, production defaults), distribution in proxy mode and nginx, measures both peers and
rewrites `bench/RESULTS.md`.
"""
