# The one task runner. `.ci/run` calls only these targets.
CARGO ?= cargo
VIGIE := target/debug/vigie

.PHONY: all fmt fmt-check lint test unit e2e docker generate generate-check bench demo build validate-examples

all: fmt-check lint test

build:
	$(CARGO) build --locked

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Everything: unit, property and integration tests, the CRD drift check, the
## examples, and the end-to-end tests against a real Docker engine (started here).
test: build generate-check validate-examples docker
	VIGIE_E2E_DOCKER=1 $(CARGO) test --locked --lib --bins --tests

## The tests that need no Docker engine (the end-to-end ones are skipped).
unit:
	$(CARGO) test --locked --lib --bins --tests

## A Docker engine answering (as root on Debian: installs docker.io, starts dockerd).
docker:
	e2e/docker.sh ensure

## Regenerate the checked-in CRDs from the Rust types.
generate: build
	$(VIGIE) crds --dir crds

## Fail when crds/ differs from what the code generates.
generate-check: generate
	git diff --exit-code -- crds/ || { echo "crds/ is out of date: run 'make generate' and commit"; exit 1; }

validate-examples: build
	$(VIGIE) validate examples/vm
	$(VIGIE) validate examples/data-platform
	$(VIGIE) validate examples/demo

## The end-to-end tests only (real Docker engine; the Kubernetes control plane comes with the operator).
e2e: build docker
	VIGIE_E2E_DOCKER=1 $(CARGO) test --locked --test e2e_docker --test e2e_docker_faults --test e2e_docker_restart --test e2e_docker_tls --test e2e_docker_ci

## Benchmarks that print figures (ratios against baselines measured in the same run).
bench: build docker
	$(CARGO) bench --locked --bench docker

## The main job: vigie run on examples/demo/, deploy, validate, roll back on red CI.
demo: build
	bash e2e/demo.sh
