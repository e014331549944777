# Two entry points: `make test` and `make book`. Each creates .venv when it is missing.
PY := .venv/bin/python
THREADS ?= 2

.PHONY: test book env bench clean

env: .venv/.done

.venv/.done: requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$(grep -E '^torch(vision)?==' requirements.txt)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: env
	$(PY) -m pytest

bench: env
	$(PY) benchmarks/bench_model.py --threads $(THREADS)
	$(PY) benchmarks/bench_training.py --threads $(THREADS)
	$(PY) benchmarks/bench_fewshot.py
	$(PY) benchmarks/bench_stats_memory.py --threads $(THREADS)
