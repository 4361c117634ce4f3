# Benchmarks live outside the test suite; figures go to benchmarks/README.md.
.PHONY: test bench bench-quick lint

test:
	.venv/bin/pytest

bench:
	.venv/bin/pytest benchmarks -s -p no:cacheprovider

bench-quick:
	.venv/bin/pytest benchmarks/bench_replay.py --benchmark-only -s -p no:cacheprovider

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
