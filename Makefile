# Two entry points: `make test` and `make book`. Each creates .venv when it is missing.
PY := .venv/bin/python
THREADS ?= 2
DEMO_DATA := data/demo
DEMO_CHECKPOINT := analysis_lib/assets/demo-clip.safetensors
SWEEP_WORKERS ?= 2

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

# The embedded default, end to end: demo data, the demo model, the sweep, the analyses, the book.
book: env
	$(PY) -m analysis_lib.demo.world --root $(DEMO_DATA)
	test -f $(DEMO_CHECKPOINT) || $(PY) -m analysis_lib.demo.pretrain --out $(DEMO_CHECKPOINT)
	$(PY) -m analysis_lib sweep experiments/demo.yaml --workers $(SWEEP_WORKERS)
	$(PY) -m analysis_lib analyses experiments/demo.yaml --workers $(SWEEP_WORKERS)
	.venv/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"

bench: env
	$(PY) benchmarks/bench_model.py --threads $(THREADS)
	$(PY) benchmarks/bench_training.py --threads $(THREADS)
	$(PY) benchmarks/bench_fewshot.py
	$(PY) benchmarks/bench_stats_memory.py --threads $(THREADS)

clean:
	rm -rf _build book/generated runs/demo
