# Two entry points for a fresh machine:  make demo  and  make test.
# Both create .venv if it is absent and install what they need into it.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch (a plain "torch" requirement would pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
export ROBENCH_DATA ?= $(abspath ../shared/data)

.PHONY: demo test docs install install-all install-bench clean help

help:
	@echo "make demo   set up .venv and run the quick-start suite on embedded data, print the leaderboard"
	@echo "make test   set up .venv with all extras and run the test suite"
	@echo "make docs   regenerate the references and build the documentation site into build/site"
	@echo "make install-bench   add the benchmark-only comparison libraries (adv-lib) to .venv"

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-all: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e '.[all]'
	# onnx2torch (the onnx loader) and torchattacks (the autoattack plugin's components) without their
	# torchvision requirement, which would replace the CPU torch with a CUDA build
	$(PIP) install --quiet --no-deps "onnx2torch==1.5.15" "torchattacks==3.5.1"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-all: $(VENV)/.installed-all

# Benchmark-only: adv-lib, the reference PDPGD/PDGD/FMN of benchmarks/bench_pdpgd.py. --no-deps
# because its requirements pull torchvision (a CUDA build) and visdom (an sdist that no longer
# builds); the benchmark imports only the two attack modules and needs neither.
install-bench: $(VENV)/.installed-all
	$(PIP) install --quiet --no-deps adv-lib==0.2.8
	$(PIP) install --quiet tqdm

demo: $(VENV)/.installed
	$(VENV)/bin/robench run suites/quickstart.yaml

test: $(VENV)/.installed-all
	$(VENV)/bin/python -m pytest

docs: $(VENV)/.installed-all
	$(PY) -m robench.docgen
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf runs/ .pytest_cache
