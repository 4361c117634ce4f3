# Benchmarks live outside the test suite; figures go to benchmarks/README.md.
.PHONY: test bench bench-quick lint typecheck

test:
	.venv/bin/pytest

bench:
	.venv/bin/pytest benchmarks -s -p no:cacheprovider

bench-quick:
	.venv/bin/pytest benchmarks/bench_replay.py --benchmark-only -s -p no:cacheprovider

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# mypy cannot follow the editable install's import hook: check a plain install instead.
typecheck:
	rm -rf .typecheck && .venv/bin/pip install -q --no-deps --target .typecheck . && \
	cd .typecheck && ../.venv/bin/mypy --strict --config-file ../pyproject.toml -p perpsim.core
