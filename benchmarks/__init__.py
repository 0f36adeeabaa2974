"""Speed benchmarks: every claim is a ratio against a baseline measured in the same run.

``make bench`` (``python -m benchmarks``) runs every module's ``run(quick)`` and writes
``benchmarks/results.md`` and ``benchmarks/results.json``.
"""
