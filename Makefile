# Perimeter's entry points. `make run` and `make test` do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
CTEST_ARGS ?=
# Tests run two at a time: most of their time is spent waiting on the control planes, nodes and
# peers they start, and tests that need the one real node a machine can run are serialized by
# ctest (RESOURCE_LOCK perimeter_real_node).
TEST_JOBS ?= 2
JOBS ?= $(shell nproc)

.PHONY: all deps tools setup node-images build manifests test unit run lint format clean cluster-up cluster-down

all: build

deps:
	@hack/install-deps.sh

# Pinned kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, etcd, KWOK,
# Helm, and the real node's kube-router (NetworkPolicy), kube-proxy (Services) and CoreDNS (its
# cluster DNS image's binary), built from the Go module proxy into ~/.cache/perimeter (a second
# run does nothing).
tools:
	@hack/tools/build-tools.sh all >/dev/null

$(BUILD_DIR)/build.ninja: CMakeLists.txt
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: deps $(BUILD_DIR)/build.ninja
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Set-up that particular tests need (npm packages of reference peers, say): every executable
# hack/setup/*.sh, each idempotent and caching outside the repository.
setup: deps
	@for s in hack/setup/*.sh; do [ -x "$$s" ] || continue; "$$s" || { echo "[setup] $$s failed" >&2; exit 1; }; done

# The images the local real node needs besides the runner's (the pause image): cached.
node-images: deps
	@hack/setup/node-images.sh

# Every test (unit, integration against the real control plane, end to end) through ctest.
test: deps tools setup build
	@PERIMETER_TOOLS_BIN=$$(hack/tools/build-tools.sh all 2>/dev/null | tail -n 1) \
	  ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error --parallel $(TEST_JOBS) $(CTEST_ARGS)

unit: deps build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -L unit $(CTEST_ARGS)

# The main job on the embedded local stack: the real node as root, else PERIMETER_RUN_NODE=kwok.
run: deps tools node-images build
	@BUILD_DIR=$(BUILD_DIR) hack/run-local

cluster-up: deps tools build
	@hack/local-cluster up

cluster-down:
	@hack/local-cluster down

# deploy/perimeter.yaml, rendered from the chart (kubectl apply, Argo CD).
manifests: tools
	@hack/render-manifests.sh

lint: deps $(BUILD_DIR)/build.ninja
	@hack/lint.sh $(BUILD_DIR)

format:
	@git ls-files '*.h' '*.cc' | xargs -r clang-format -i

clean:
	rm -rf $(BUILD_DIR)
