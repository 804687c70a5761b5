# agentvisor: set-up, images, tests. `make test` is what CI runs (.ci/run).
# `make setup` installs what running needs (up, down, status, image); `make setup-dev` adds what
# the tests and lint need (the dev extras, chromium, systemd, docker-compose).

PYTHON_VENV := .venv/bin/python
AGENTVISOR  := .venv/bin/agentvisor
AGENT_CLIS  ?= claude
# The user image carries the agent CLIs; the test image (AGENT_CLIS=none) does not.
ifeq ($(AGENT_CLIS),none)
IMAGE_TAG   ?= agentvisor/sandbox:test
else
IMAGE_TAG   ?= agentvisor/sandbox:latest
endif
PYTEST_ARGS ?=
ARGS        ?=

.PHONY: setup setup-dev image image-test test fuzz chaos up down status bench lint fmt

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

# Base image (pulled, or built with debootstrap when no registry answers), then the sandbox.
image: setup
	$(AGENTVISOR) image build --agent-clis $(AGENT_CLIS) --tag $(IMAGE_TAG)

image-test: setup
	$(AGENTVISOR) image build --agent-clis none --tag agentvisor/sandbox:test

# Two workers, whole files to one worker (module fixtures such as a team of sandboxes are made
# once): most tests wait on real servers, sandboxes and timers, so two halve the wall time on
# two cores. TEST_WORKERS=0 runs them in this process, one after the other.
TEST_WORKERS ?= 2
test: setup-dev image-test lint
	$(PYTHON_VENV) -m pytest -q -ra --color=no --durations=10 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# schemathesis over the live server's schema, as an agent and as the operator, for FUZZ_S
# seconds each (`make test` runs the same test for 60 s). The bar: 0 answers 5xx, 0 schema
# violations. FUZZ_S=3600 make fuzz for an hour.
FUZZ_S ?= 600
fuzz: setup-dev
	AGENTVISOR_FUZZ_S=$(FUZZ_S) $(PYTHON_VENV) -m pytest -q -s -ra --color=no \
		--timeout=$$(( $(FUZZ_S) * 3 + 600 )) tests/integration/test_api_fuzz.py

# `agentvisor chaos` for CHAOS_S seconds on a throwaway demo team (docs/guides/chaos-and-load.md):
# the server, shims, sandboxes and agent CLIs killed at random; the table, and exit 1 on any
# message lost, doubled or in the wrong pane. ARGS passes more (e.g. ARGS="--seed 7 --rate 8").
CHAOS_S ?= 300
chaos: setup image-test
	$(AGENTVISOR) chaos --duration $(CHAOS_S) --image agentvisor/sandbox:test $(ARGS)

# A spec inside this checkout (like examples/) gets a new project repository next to it.
NEW_PROJECT = $(if $(filter $(CURDIR)/%,$(abspath $(SPEC))),--new-project,)

up: setup
	@test -n "$(SPEC)" || { echo "usage: make up SPEC=path/to/spec.md" >&2; exit 2; }
	$(AGENTVISOR) up $(SPEC) $(NEW_PROJECT) $(ARGS)

down: setup
	$(AGENTVISOR) down $(ARGS)

status: setup
	$(AGENTVISOR) status $(ARGS)

bench: setup-dev image-test
	$(PYTHON_VENV) -m benchmarks $(ARGS)

lint: setup-dev
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

fmt:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# The supervisor's own image, for compose/docker-compose.yml (docs/guides/compose.md).
.PHONY: image-supervisor
image-supervisor: setup
	$(AGENTVISOR) image build-supervisor --tag agentvisor/supervisor:latest
