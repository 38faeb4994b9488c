"""Benchmarks: run as modules (`python -m bench.ledger`), never collected by pytest."""
