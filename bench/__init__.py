"""Benchmarks: variants of the same work measured side by side in one run (``python -m bench``).

Register a benchmark with :func:`bench.runner.benchmark` in a module of this package; see
:mod:`bench.runner`. Speed and memory targets are proven here, never by timed assertions in tests.
"""
