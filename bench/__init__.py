"""Benchmarks for ci-executor (`make bench`, `python -m bench --help`). Not tests: they print."""
