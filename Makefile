# The one task runner. `.ci/run` calls only these targets.
CARGO ?= cargo
VIGIE := target/debug/vigie

.PHONY: all fmt fmt-check lint test unit e2e docker k8s generate generate-check bench bench-k8s demo build validate-examples helm-lint

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
## examples, the chart's lint, and the end-to-end tests against a real Docker engine
## and a real Kubernetes control plane (both built or started here).
test: build generate-check validate-examples docker k8s helm-lint
	VIGIE_E2E_DOCKER=1 VIGIE_E2E_K8S=1 $(CARGO) test --locked --lib --bins --tests

## The tests that need no Docker engine (the end-to-end ones are skipped).
unit:
	$(CARGO) test --locked --lib --bins --tests

## A Docker engine answering (as root on Debian: installs docker.io, starts dockerd).
docker:
	e2e/docker.sh ensure

## A Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
## kube-scheduler, kwok) built from Go modules and started; builds are cached.
k8s:
	e2e/k8s.sh ensure

helm-lint: k8s
	$$(e2e/k8s.sh bin)/helm lint --strict charts/vigie

## Regenerate the checked-in CRDs (crds/ and the chart's copy) from the Rust types.
generate: build
	$(VIGIE) crds --dir crds
	$(VIGIE) crds --dir charts/vigie/crds

## Fail when crds/ or the chart's CRDs differ from what the code generates.
generate-check: generate
	git diff --exit-code -- crds/ charts/vigie/crds/ || { echo "crds/ is out of date: run 'make generate' and commit"; exit 1; }
	test -z "$$(git status --porcelain -- crds/ charts/vigie/crds/)" || { echo "untracked CRD files: run 'make generate' and commit"; exit 1; }

validate-examples: build
	$(VIGIE) validate examples/vm
	$(VIGIE) validate examples/data-platform
	$(VIGIE) validate examples/demo
	$(VIGIE) validate examples/kubernetes

## The end-to-end tests only (a real Docker engine and a real Kubernetes control plane).
e2e: build docker k8s
	VIGIE_E2E_DOCKER=1 VIGIE_E2E_K8S=1 $(CARGO) test --locked --test e2e_docker --test e2e_docker_faults --test e2e_docker_restart --test e2e_docker_tls --test e2e_docker_ci --test e2e_k8s

## Benchmarks that print figures (ratios against baselines measured in the same run).
bench: build docker
	$(CARGO) bench --locked --bench docker

## 500 Releases on the real control plane, against 500 Deployments created directly.
bench-k8s: build k8s
	$(CARGO) bench --locked --bench k8s

## The main job: vigie run on examples/demo/, deploy, validate, roll back on red CI.
demo: build
	bash e2e/demo.sh
