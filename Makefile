# Entry points: `make test`, `make book` (the demo), `make study` (a real experiment), `make gpu-check`.
# Each creates .venv when it is missing. `make test-fast` leaves out the tests marked slow
# (end-to-end runs, the browser).
PY := .venv/bin/python
THREADS ?= 2
DEMO_DATA := data/demo
DEMO_CHECKPOINT := analysis_lib/assets/demo-clip.safetensors
SWEEP_WORKERS ?= 2
EXPERIMENT ?= experiments/paper.yaml
DATA_ROOT ?=
WORKERS ?=
DATA_FLAG = $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

.PHONY: test test-fast browser-deps book study gpu-check env bench clean lab explore

env: .venv/.done

# The environment takes about 6 GB (torch's CUDA build is what pip finds for torchvision).
VENV_GB := 7
.venv/.done: requirements.txt pyproject.toml
	@python3 -c "import shutil, sys; free = shutil.disk_usage('.').free / 1e9; sys.exit(0 if free >= $(VENV_GB) else \
	  f'error: {free:.1f} GB free here; the environment (.venv) needs about $(VENV_GB) GB: free some disk and rerun')"
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$(grep -E '^torch(vision)?==' requirements.txt)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Everything, as CI runs it (.ci/run): TEST_WORKERS pytest processes, each test file whole in one
# of them (a file's fixtures, such as the pipeline's book, are built once).
TEST_WORKERS ?= 2
test: env browser-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: env
	$(PY) -m pytest -m "not slow"

# Headless Chromium (Debian package) and playwright-core (npm) for the browser tests of the book;
# installs only what is missing.
browser-deps:
	bash tests/browser/setup.sh

# The embedded default, end to end: demo data, the demo model, the sweep, the analyses, the book.
book: env
	$(PY) -m analysis_lib.demo.world --root $(DEMO_DATA)
	test -f $(DEMO_CHECKPOINT) || $(PY) -m analysis_lib.demo.pretrain --out $(DEMO_CHECKPOINT)
	$(PY) -m analysis_lib sweep experiments/demo.yaml --workers $(SWEEP_WORKERS)
	$(PY) -m analysis_lib analyses experiments/demo.yaml --workers $(SWEEP_WORKERS)
	.venv/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"

# Any experiment end to end, resumable like the demo (finished runs and up-to-date analyses are
# skipped): make study EXPERIMENT=experiments/paper.yaml DATA_ROOT=/data/coop [WORKERS=N]
study: env
	$(PY) -m analysis_lib sweep $(EXPERIMENT) $(DATA_FLAG) $(if $(WORKERS),--workers $(WORKERS))
	$(PY) -m analysis_lib analyses $(EXPERIMENT) $(DATA_FLAG)
	.venv/bin/jupyter-book build . -W -n --keep-going
	@echo "The book of $(EXPERIMENT) is built: open file://$(CURDIR)/_build/html/index.html"

# JupyterLab on the repository with the venv's kernel (kernels start in the repository root, as
# under papermill); prints the URL to open, token included. Nothing is fetched from the internet.
lab: env
	$(PY) -m analysis_lib.report.servers lab $(if $(PORT),--port $(PORT))

# The live attention explorer as a Voilà app (widgets only, offline) over the finished runs under
# runs/; prints its URL. RUN=runs/demo/DemoToys/ivlp/seed1 picks the run shown first.
explore: env
	$(PY) -m analysis_lib.report.servers explore $(if $(RUN),--run $(RUN)) $(if $(PORT),--port $(PORT))

# Step, evaluation, analyses and decode rates on this machine and the study's projected device
# hours (benchmarks/gpu_check.py); GPU_CHECK_FLAGS="--device cpu --quick" runs it on a CPU.
gpu-check: env
	$(PY) benchmarks/gpu_check.py --experiment $(EXPERIMENT) $(GPU_CHECK_FLAGS)

bench: env
	$(PY) benchmarks/bench_model.py --threads $(THREADS)
	$(PY) benchmarks/bench_training.py --threads $(THREADS)
	$(PY) benchmarks/bench_fewshot.py
	$(PY) benchmarks/bench_stats_memory.py --threads $(THREADS)

clean:
	rm -rf _build book/generated runs/demo
