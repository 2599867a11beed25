# tp's build, images, local test cluster and tests. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO      ?= go
# Evaluated once per make run (:=): a commit made while a long target runs must not give
# the images one tag and the binaries that install them another.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# The cluster image `tp install` deploys by default; baked into bin/tp.
IMAGE   ?= localhost/tp/tp:$(VERSION)
ARCH    ?= $(shell $(GO) env GOARCH)
LDFLAGS := -s -w -X github.com/tpdev/tp/cmd/internal/buildinfo.Version=$(VERSION) \
           -X github.com/tpdev/tp/cmd/internal/buildinfo.Image=$(IMAGE)
LINUX   := bin/linux_$(ARCH)
IMAGES  := bin/images
E2E_TIMEOUT ?= 40m

# The release (make dist, README "Install"). For dist, IMAGE is the registry path the cluster
# image will be pushed to (default ghcr.io/tpdev/tp), tagged VERSION: the release's tp
# installs $(DIST_REF) when no --image is given. build and images keep their local IMAGE.
#   make dist VERSION=v0.3.0 IMAGE=registry.example.com/tools/tp
DIST             := dist
DIST_REPO        := $(if $(filter command line environment override,$(origin IMAGE)),$(IMAGE),ghcr.io/tpdev/tp)
DIST_REF         := $(DIST_REPO):$(VERSION)
# Every OS/arch tp is released for, and the cluster image's architectures: the lists of
# package deploy/release (Platforms, ImageArchs), which tests/rules_dist_test.go holds to these.
DIST_PLATFORMS   := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
DIST_IMAGE_ARCHS := amd64 arm64
# Where the krew manifest says the archives are downloaded from.
RELEASE_URL      ?= https://github.com/tpdev/tp/releases/download/$(VERSION)
DIST_LDFLAGS     := -s -w -X github.com/tpdev/tp/cmd/internal/buildinfo.Version=$(VERSION) \
                    -X github.com/tpdev/tp/cmd/internal/buildinfo.Image=$(DIST_REF)
comma := ,
empty :=
space := $(empty) $(empty)
define newline


endef

.PHONY: help build images dist dist-check cluster-up cluster-down cluster-load cluster-cycle demo bench vet unit fuzz cross e2e test clean proto

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build bin/tp and bin/tp-cluster for this machine
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/tp ./cmd/tp-cluster

images: ## build the image tarballs in bin/images: tp's cluster image (manager and agent), the test workload, pause
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o $(LINUX)/ ./cmd/tp-cluster ./cmd/tp-agent ./tests/cmd/workload ./tests/cmd/pause
	$(GO) build -o bin/mkimage ./cmd/mkimage
	@mkdir -p $(IMAGES)
	bin/mkimage -arch $(ARCH) -bin $(LINUX)/tp-cluster -extra $(LINUX)/tp-agent:/tp-agent -ref $(IMAGE) -user 65532:65532 -out $(IMAGES)/tp.tar
	bin/mkimage -arch $(ARCH) -bin $(LINUX)/workload -ref localhost/tp/workload:test -out $(IMAGES)/workload.tar
	bin/mkimage -arch $(ARCH) -bin $(LINUX)/pause -ref localhost/tp/pause:test -out $(IMAGES)/pause.tar

dist: ## the release in dist/: tp_OS_ARCH for every platform, krew archives and kubectl-tp.yaml, the cluster image (amd64+arm64) as one OCI archive, SHA256SUMS; IMAGE=registry path
	rm -rf $(DIST) bin/dist
	@mkdir -p $(DIST)
	$(foreach p,$(DIST_PLATFORMS),CGO_ENABLED=0 GOOS=$(word 1,$(subst /, ,$(p))) GOARCH=$(word 2,$(subst /, ,$(p))) $(GO) build -trimpath -ldflags '$(DIST_LDFLAGS)' \
		-o $(DIST)/tp_$(subst /,_,$(p))$(if $(filter windows/%,$(p)),.exe) ./cmd/tp$(newline))
	$(foreach a,$(DIST_IMAGE_ARCHS),CGO_ENABLED=0 GOOS=linux GOARCH=$(a) $(GO) build -trimpath -ldflags '$(DIST_LDFLAGS)' \
		-o bin/dist/linux_$(a)/ ./cmd/tp-cluster ./cmd/tp-agent$(newline))
	$(GO) build -o bin/ ./cmd/mkimage ./cmd/mkdist
	bin/mkimage -oci -arch $(subst $(space),$(comma),$(DIST_IMAGE_ARCHS)) -bin 'bin/dist/linux_{arch}/tp-cluster' \
		-extra 'bin/dist/linux_{arch}/tp-agent:/tp-agent' -ref $(DIST_REF) -user 65532:65532 -out $(DIST)/tp_image.oci.tar
	bin/mkdist -dir $(DIST) -version $(VERSION) -url $(RELEASE_URL)
	@cd $(DIST) && ls -l && echo "dist: tp installs $(DIST_REF); push it with: skopeo copy --all oci-archive:$(DIST)/tp_image.oci.tar docker://$(DIST_REF)"

dist-check: dist ## make dist, then check it as a user meets it: sums, each binary's object format (this machine's runs version), krew archives and manifest, both image architectures
	bin/mkdist -check -dir $(DIST) -version $(VERSION) -url $(RELEASE_URL) -image $(DIST_REF) -image-files /tp-cluster,/tp-agent

bin/tpcluster: FORCE
	$(GO) build -o $@ ./tests/cmd/tpcluster
FORCE:

cluster-up: images bin/tpcluster ## start the local test cluster (root); KUBECONFIG=.cluster/kubeconfig
	bin/tpcluster up --images $(IMAGES)

cluster-down: bin/tpcluster ## stop the local test cluster and remove all it made (root)
	bin/tpcluster down

cluster-load: bin/tpcluster ## load an image tarball into the test cluster: make cluster-load TAR=path
	@test -n "$(TAR)" || { echo "usage: make cluster-load TAR=path/to/image.tar"; exit 2; }
	bin/tpcluster load $(TAR)

cluster-cycle: images bin/tpcluster ## lifecycle test: up, up (quick), down (leaves nothing), up
	bin/tpcluster cycle --images $(IMAGES)

proto: ## regenerate remote/tunnel/tunnelpb from its .proto files (apt-get install protobuf-compiler; the generators at the versions the files name)
	GOBIN=$(CURDIR)/bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	cd remote/tunnel/tunnelpb && PATH=$(CURDIR)/bin:$$PATH protoc -I . --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative tunnel.proto intercept.proto

vet: ## go vet, the e2e suites included
	$(GO) vet ./...
	$(GO) vet -tags e2e ./tests/...
	$(GO) vet -tags bench ./tests/...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

unit: ## unit tests (no cluster)
	$(GO) test -count=1 ./...

FUZZTIME ?= 10000x
fuzz: ## run every fuzz target for FUZZTIME executions (a count: Go 1.26 fails duration budgets at random, go.dev/issue/75804); seed corpora run with unit too
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9]*\).*/\1/'); do \
			echo "fuzz $$t $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) $$t || exit 1; \
		done; \
	done

cross: ## quick: tp compiles for every release platform (macOS, Windows, Linux; amd64 and arm64); make dist-check builds and checks them
	$(foreach p,$(DIST_PLATFORMS),GOOS=$(word 1,$(subst /, ,$(p))) GOARCH=$(word 2,$(subst /, ,$(p))) $(GO) build -o /dev/null ./cmd/tp$(newline))

e2e: build cluster-up ## the e2e suites against the local cluster (tp runs as an unprivileged user in the laptop namespace)
	CGO_ENABLED=0 $(GO) build -o bin/netcheck ./tests/cmd/netcheck
	TP_E2E_TP=$(abspath bin/tp) TP_E2E_NETCHECK=$(abspath bin/netcheck) TP_E2E_TPCLUSTER=$(abspath bin/tpcluster) TP_E2E_MANAGER_IMAGE=$(IMAGE) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./tests/e2e/... 2>&1 | tee bin/e2e.log
	@echo "e2e: $$(grep -c -- '^\s*--- PASS' bin/e2e.log) passed, $$(grep -c -- '^\s*--- FAIL' bin/e2e.log || true) failed, $$(grep -c -- '^\s*--- SKIP' bin/e2e.log || true) skipped"
	@if [ -n "$${CI:-}" ] && grep -q -- '--- SKIP' bin/e2e.log; then echo "e2e: a test skipped in CI; e2e tests must run"; exit 1; fi

demo: build images bin/tpcluster ## the main job: cluster (unless KUBECONFIG is set), tp install, tp connect, curl by name
	tests/packages.sh
	tests/demo/demo.sh

bench: build cluster-up ## measure tp against raw port-forward and the direct path, in one run
	CGO_ENABLED=0 $(GO) build -o bin/netcheck ./tests/cmd/netcheck
	TP_E2E_TP=$(abspath bin/tp) TP_E2E_NETCHECK=$(abspath bin/netcheck) TP_BENCH_OUT=$(abspath bin/bench.txt) $(GO) test -tags bench -count=1 -timeout 30m -v -run TestBench ./tests/bench/
	@cat bin/bench.txt

test: vet unit fuzz dist-check cluster-cycle e2e ## everything CI runs: vet, unit tests, a short fuzz of every decoder, the release built and checked, cluster lifecycle, e2e

clean: ## remove build outputs (not the cluster, not the build cache)
	rm -rf bin $(DIST)
