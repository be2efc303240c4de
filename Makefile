# archway: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
DEV_DIR ?= .dev
# make bench-scale's own environment, beside the one of DEV_DIR.
SCALE_DIR ?= .dev-scale
CARGO ?= cargo

.PHONY: help deps build control-plane buildkit registry-v3 gitops-tools crds dev-up dev-down demo bench bench-scale image test unit-test e2e-test lint

help:
	@echo "make demo      bring the local environment up and show it (make dev-down stops it)"
	@echo "make test      all tests: unit, CRD freshness, and end-to-end against the local environment"
	@echo "make dev-up    bring the local environment up alone; make dev-down stops it"
	@echo "make bench     build the blog example on the local environment and print timings, RSS, API requests;"
	@echo "               then its COPY-only variant assembled and with buildah: time and bytes pushed;"
	@echo "               then a rebuild with and without spec.cache (hack/bench-cache.sh): time saved"
	@echo "make bench-scale  1,000 builds on an environment of its own with 100 extra nodes: API requests,"
	@echo "                  reconcile times, RSS and index latency against issue 9's goals (a table;"
	@echo "                  one run's is in README.md, Scale)"
	@echo "make image     build the operator's image (Dockerfile) for linux/amd64 into the local registry"

deps:
	@hack/install-deps.sh

control-plane: deps
	@hack/build-control-plane.sh >/dev/null

# BuildKit for the build pods of `spec.builder.kind: buildkit` (Debian packages none).
buildkit: deps
	@hack/build-buildkit.sh >/dev/null

# distribution v3, the tests' second registry (the main one is Debian's distribution 2.8).
registry-v3: deps
	@hack/build-registry.sh >/dev/null

# Helm and gitops-check (kstatus, Argo CD's Lua), with which the tests read status as GitOps tools do.
gitops-tools: deps
	@hack/build-gitops-tools.sh >/dev/null

build: deps
	$(CARGO) build --workspace --all-targets

# deploy/base/crd.yaml and the chart's crds/ hold the same file: kustomize and Helm load nothing
# outside their own directories.
crds:
	$(CARGO) run -q --bin archway -- crd > crds/multiarchbuild.yaml
	cp crds/multiarchbuild.yaml deploy/base/crd.yaml
	cp crds/multiarchbuild.yaml charts/archway/crds/multiarchbuild.yaml

dev-up: build control-plane buildkit
	@hack/dev-up.sh "$(DEV_DIR)"

dev-down:
	@hack/dev-down.sh "$(DEV_DIR)"

demo: dev-up
	@hack/demo.sh "$(DEV_DIR)"

bench: dev-up
	@hack/bench.sh "$(DEV_DIR)"
	@hack/bench-idle.sh "$(DEV_DIR)"
	@hack/bench-assemble.sh "$(DEV_DIR)"
	@hack/bench-cache.sh "$(DEV_DIR)"

# The operator at scale (BENCH_SCALE_BUILDS, BENCH_SCALE_EXTRA_NODES, ...: see the script), on an
# environment of its own in SCALE_DIR that the script brings up and tears down.
bench-scale: build control-plane buildkit
	@hack/bench-scale.sh "$(SCALE_DIR)"

# The operator's image from the Dockerfile, pushed to the local environment's registry.
image: dev-up
	@hack/build-image.sh "$(DEV_DIR)"

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-test: deps
	$(CARGO) test --workspace --lib --bins

e2e-test: build control-plane buildkit registry-v3 gitops-tools
	$(CARGO) test --workspace --test '*' -- --test-threads=2

test: lint unit-test e2e-test
