"""Side-by-side benchmark of ``wslarkbot serve`` and the nginx + nchan relay (deploy/nchan/).

Run ``python -m bench --help`` from the repository root; method and figures: docs/performance.md.
(``python -m bench.scaleout`` is a separate benchmark: one relay node vs several sharing Redis.)
Not imported by the package or the tests.
"""
