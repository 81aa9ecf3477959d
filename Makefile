# The one task runner. `.ci/run` calls only these targets.
CARGO ?= cargo
VIGIE := target/debug/vigie

.PHONY: all fmt fmt-check lint test e2e generate generate-check bench demo build validate-examples

all: fmt-check lint test

build:
	$(CARGO) build --locked

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Unit, property and integration tests, the CRD drift check and the examples.
test: build generate-check validate-examples
	$(CARGO) test --locked --all-targets

## Regenerate the checked-in CRDs from the Rust types.
generate: build
	$(VIGIE) crds --dir crds

## Fail when crds/ differs from what the code generates.
generate-check: generate
	git diff --exit-code -- crds/ || { echo "crds/ is out of date: run 'make generate' and commit"; exit 1; }

validate-examples: build
	$(VIGIE) validate examples/vm
	$(VIGIE) validate examples/data-platform

## Tests against a real Docker engine and a real Kubernetes control plane.
e2e:
	@echo "e2e: no end-to-end suite yet: the Docker backend (issue 3) and the operator (issue 5) are not built."

## Benchmarks that print figures.
bench:
	@echo "bench: no benchmark yet: the Docker backend and 'vigie run' (issue 3) are not built."

## The main job on the embedded default.
demo: build
	@echo "demo: not built yet. 'vigie run' and the Docker backend come with issue 3."
	@echo "What works today: the resources, their validation and the lifecycle rules:"
	$(VIGIE) validate examples/vm
	$(VIGIE) validate examples/data-platform
