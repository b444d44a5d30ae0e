# copperline: the two commands. Both set up everything they need first.
#   make run   - copperd on the soft backend (foreground)
#   make test  - the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.copperline-installed
PYTEST_ARGS ?=

.PHONY: run test setup system-deps bench mutants formal clean

setup: system-deps $(STAMP)

# Reinstall when the dependency list changes; the package itself is editable.
# The folders map onto `copperline.*` (package-dir), so setuptools serves the editable
# install through an import finder and says so in a "!! Editable installation ... !!"
# block (an InformationOnly warning pip re-shows at every install); it is informational
# only, so that one message is filtered (PYTHONWARNINGS reaches the build backend).
QUIET_EDITABLE = PYTHONWARNINGS='ignore:Editable installation'
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing copperline[test]"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(QUIET_EDITABLE) $(PY) -m pip install --quiet -e '.[test]'
	@touch $@

system-deps:
	@bash tools/ensure-system-deps.sh

run: setup
	@$(VENV)/bin/copperd --backend soft

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

# gateware mutants, one at a time, each against its targeted tests (docs/core.md, "Verification")
mutants: setup
	@$(PY) -m tests.mutants $(MUTANTS)

# the formal proofs alone, with a table of depths and times (make test runs them too)
formal: setup
	@$(PY) -m tests.formal $(PROOFS)

bench: setup
	@$(PY) -m tests.bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
