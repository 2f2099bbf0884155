# Two commands do all set-up on a fresh machine: `make demo` and `make test` (`make test-fast`: the
# tests not marked slow).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-testset clean

# torch is installed first and pinned, so nothing pulls a CUDA build; never torchaudio.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m dereverb demo -o demo_out

test: $(STAMP)
	$(PY) -m pytest -q

# The quick subset for a change in progress (under a minute on 2 cores); `make test` (CI) runs all.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Scripts that score a paired test set (dereverb make-testset) run with `make bench-testset TESTSET=DIR`.
TESTSET_BENCH = benchmarks/mask_ceiling.py benchmarks/mask_strength.py

bench: $(STAMP)
	for f in $(filter-out $(TESTSET_BENCH),$(wildcard benchmarks/*.py)); do $(PY) $$f || exit 1; done

bench-testset: $(STAMP)
	@test -n "$(TESTSET)" || { echo 'usage: make bench-testset TESTSET=DIR (from dereverb make-testset)'; exit 2; }
	for f in $(TESTSET_BENCH); do $(PY) $$f $(TESTSET) || exit 1; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
