# The one task runner. `.ci/run` calls only these targets.
CARGO ?= cargo
VIGIE := target/debug/vigie

.PHONY: all ci deps deps-check fmt fmt-check lint test unit e2e docker k8s stop generate generate-check bench bench-web bench-dagster bench-k8s fuzz demo demo-dagster build validate-examples helm-lint

# CI builds once per run: incremental compilation only costs disk there (gigabytes of
# dep-graphs for ~20 test binaries; a CI run once ran out of space).
ifdef CI
export CARGO_INCREMENTAL := 0
endif

all: fmt-check lint test

## What CI runs (`.ci/run`): the packages and Rust components first, then the checks.
ci: deps fmt-check lint test

## Everything `make test` uses: as root on Debian, installs the missing packages
## (docker.io, openssh-server, python3-aiosmtpd, chromium and chromium-driver for the
## browser tests, debootstrap for the Dagster images, ...) and rustfmt/clippy; elsewhere stops with one message listing
## what is missing and how to get it.
deps:
	e2e/deps.sh install

## Lists what `make test` would need and this machine lacks; installs nothing.
deps-check:
	e2e/deps.sh check

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
## and a real Kubernetes control plane (both built or started here) and in a real
## headless Chromium.
## Ends with a summary per tier (unit, property, integration, Docker, Kubernetes,
## browser); a test that cannot run for want of a part fails, with the install hint.
test: deps build generate-check validate-examples docker k8s helm-lint
	VIGIE_E2E_DOCKER=1 VIGIE_E2E_K8S=1 VIGIE_E2E_BROWSER=1 CARGO="$(CARGO)" e2e/test.sh --lib --bins --tests

## The tests that need no Docker engine nor control plane (those are skipped, and the
## summary says why).
unit:
	CARGO="$(CARGO)" e2e/test.sh --lib --bins --tests

## A Docker engine answering (as root on Debian: installs docker.io, starts dockerd).
docker:
	e2e/docker.sh ensure

## A Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
## kube-scheduler, kwok) built from Go modules and started; builds are cached.
k8s:
	e2e/k8s.sh ensure

## Stops what `make test` and `make demo` started: the control plane, the dockerd that
## e2e/docker.sh started, and the containers the tests and the demo left.
stop:
	-[ ! -f /tmp/vigie-demo/vigie.pid ] || kill $$(cat /tmp/vigie-demo/vigie.pid) 2>/dev/null; rm -f /tmp/vigie-demo/vigie.pid
	-[ ! -f /tmp/vigie-demo-dagster/vigie.pid ] || kill $$(cat /tmp/vigie-demo-dagster/vigie.pid) 2>/dev/null; rm -f /tmp/vigie-demo-dagster/vigie.pid
	-ids=$$(docker ps -aq --filter network=vigie-demo-dagster 2>/dev/null); [ -z "$$ids" ] || docker rm -f $$ids >/dev/null
	-ids=$$(docker ps -aq --filter label=app.kubernetes.io/managed-by=vigie 2>/dev/null); [ -z "$$ids" ] || docker rm -f $$ids >/dev/null
	e2e/k8s.sh stop
	e2e/docker.sh stop

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
	$(VIGIE) validate examples/dagster/docker
	$(VIGIE) validate examples/dagster/kubernetes

## The end-to-end tests only (a real Docker engine and a real Kubernetes control plane).
e2e: deps build docker k8s
	VIGIE_E2E_DOCKER=1 VIGIE_E2E_K8S=1 $(CARGO) test --locked --test e2e_docker --test e2e_docker_faults --test e2e_docker_restart --test e2e_docker_tls --test e2e_docker_ci --test e2e_docker_dagster_images --test e2e_k8s

## Longer fuzzing of the manifest loader, the directory walk and the webhook handlers
## (`make test` runs the same properties with a few hundred cases each).
fuzz:
	VIGIE_FUZZ_CASES=$${VIGIE_FUZZ_CASES:-5000} $(CARGO) test --locked --release --test input_properties

## Benchmarks that print figures (ratios against baselines measured in the same run).
bench: build docker
	$(CARGO) bench --locked --bench docker

## The web view's pages with 50 code locations × 5 environments, against a static
## asset of the same server.
bench-web:
	$(CARGO) bench --locked --bench web

## A red verdict on a Dagster code location until the real webserver serves the
## validated definitions, against a raw reload and the same rollback done by hand.
bench-dagster: build docker
	$(CARGO) bench --locked --bench dagster

## 500 Releases on the real control plane, against 500 Deployments created directly.
bench-k8s: build k8s
	$(CARGO) bench --locked --bench k8s

## The main job: vigie run on examples/demo/, deploy, validate, roll back on red CI.
demo: build
	bash e2e/demo.sh

## A Dagster code location whose definitions fail to load, rolled back, with a real
## Dagster webserver serving the good definitions again (images built locally).
demo-dagster: build
	bash e2e/demo-dagster.sh
