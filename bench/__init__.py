"""Benchmarks for image-policy: `python -m bench [NAME...]` (see BENCHMARKS.md).

Not part of `make test`: they take minutes, talk to loopback services only, and write their
figures to `bench/results/<name>.json` as well as printing tables.
"""
