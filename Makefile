# The lab's commands. The two you need: `make lab` (set up and open the lab) and `make test`.
# Every target sets up what it needs first and reuses what is already there: `setup` is what
# a learner needs (InfluxDB from apt, .venv with the notebooks' packages and nats-server),
# `setup-test` adds the test tools and Chromium.

VENV   ?= .venv
PY     := $(VENV)/bin/python
FIRST  := notebooks/00_welcome_and_setup.ipynb

.DEFAULT_GOAL := help
.PHONY: help setup setup-test lab run test bench lint refresh student notes nav stack-up stack-down stack-status \
	stack-logs stack-reset clean cluster cluster-down

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install what the lab needs: InfluxDB (apt) and the Python environment (.venv)
	@bash scripts/setup.sh lab

setup-test: ## the same plus the test tools (pytest, playwright, ...) and Chromium
	@bash scripts/setup.sh test

# JupyterLab serves the whole repository (the notebooks' links to README.md and docs/ work)
# and opens the first notebook.
lab: setup stack-up ## set up, start the local stack and open JupyterLab on the first notebook
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=. \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(FIRST)

run: setup stack-up ## execute every notebook headless (papermill) into build/notebooks
	$(PY) -m lab_helpers.workbook run

test: setup-test ## run the whole test suite (starts its own servers on free ports)
	$(PY) -m pytest

refresh: setup-test ## run every notebook against a fresh stack; save its outputs (with PNG figures) as the reference
	$(PY) -m lab_helpers.workbook refresh

student: setup ## the student edition (no solutions, no outputs) into build/student
	$(PY) -m lab_helpers.workbook student

notes: setup ## rewrite the reading-time and exercise tables of docs/teaching.md
	$(PY) -m lab_helpers.workbook notes

nav: setup ## rewrite the notebooks' Binder badges and navigation links
	$(PY) -m lab_helpers.workbook nav

bench: setup-test ## run the benchmarks (own servers in a temp folder); writes docs/benchmarks.md
	$(PY) -m bench

lint: setup-test ## static checks
	$(VENV)/bin/ruff check lab_helpers services tests

stack-up: ## start InfluxDB and NATS on loopback (a no-op when running)
	@$(PY) -m lab_helpers.stack up

stack-down: ## stop what stack-up started
	@$(PY) -m lab_helpers.stack down

stack-status: ## show what runs and whether it answers
	@$(PY) -m lab_helpers.stack status

stack-logs: ## show the servers' logs
	@$(PY) -m lab_helpers.stack logs

stack-reset: ## stop the stack and delete its data and credentials
	@$(PY) -m lab_helpers.stack reset

cluster: setup ## the lab on a local kind cluster (needs Docker and kind): build, load, deploy, forward
	@$(PY) -m lab_helpers.kind up

cluster-down: setup ## stop the dashboard's port-forward and delete the kind cluster
	@$(PY) -m lab_helpers.kind down

clean: ## delete build outputs (keeps .lab and .venv)
	rm -rf build .pytest_cache
