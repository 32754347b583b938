# `make test` and `make demo` set everything up on a fresh machine: a virtual environment in
# .venv/, the project with its dev extras, and the Debian packages listed below (installed with
# apt-get when run as root; otherwise only checked, with a clear message).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
# Debian packages the project needs: the offline world draws query images with Noto Color Emoji;
# Pillow's text shaping (raqm, which forms flag emoji from two code points) loads libfribidi;
# redis-server is the real server the search cache's Redis store is tested against (its tests
# skip without it); chromium is the browser the inspector's tests drive with Playwright (they
# skip without it). Installed with apt-get when run as root; otherwise make says what is missing
# and goes on (the world then falls back to Twemoji query images, and says so).
APT_PACKAGES := fonts-noto-color-emoji libfribidi0 redis-server chromium

.PHONY: setup system-deps lint typecheck pytest test test-verl demo docs clean

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "warning: missing Debian packages:$$missing (install them with 'sudo apt-get install$$missing'; going on without)" >&2; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

# pytest exits with 5 when it collected no test: an empty suite is a failure, not a pass.
pytest: setup
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

demo: setup
	$(VENV)/bin/mmsr demo

# The veRL integration in an environment of its own, .venv-verl/ (the verl extra beside the same
# torch 2.13.0 CPU wheel; made once, reused after): every tests/test_verl_*.py test, those that
# need verl included, and the `verl`-marked ones that run veRL's real trainer on the CPU.
VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed

$(VERL_STAMP): pyproject.toml
	@test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install -q -e '.[dev,verl]'
	@touch $(VERL_STAMP)

test-verl: system-deps $(VERL_STAMP)
	@$(VERL_VENV)/bin/pytest -m 'verl or not (slow or gpu or network)' tests/test_verl_*.py $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The documentation site in site/ (docs/ and mkdocs.yml); --strict: a broken link or any warning
# fails. Its tools are the docs extra, installed once into .venv/ beside the others.
$(DOCS_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VERL_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis site
