"""Benchmarks, each a command (``python -m bench.NAME``) that prints its figures beside Salt's."""
