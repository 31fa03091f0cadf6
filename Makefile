# airlift — see README.md. Every target works on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
APT_PACKAGES := docker-registry skopeo b3sum openssl apache2-utils tar coreutils python3 python3-jsonschema curl zstd libzstd-dev pkg-config containerd podman
# Seconds each fuzz target runs under `make fuzz`.
FUZZ_SECONDS ?= 60

.PHONY: help setup build test demo clean fuzz bench bench-scale

help:
	@echo "make demo   - install what is missing, start local registries, run the walk-through"
	@echo "make test   - fmt, clippy and the whole test suite (real registries on 127.0.0.1)"
	@echo "make setup  - install missing Debian packages and build the release binary"
	@echo "make fuzz   - run every cargo-fuzz target for FUZZ_SECONDS (default 60) each"
	@echo "make bench  - airlift vs skopeo on a 1.2 GB corpus (BENCH_SCALE=0.25 for a quicker run), writes bench/results.md"
	@echo "make bench-scale - 1,000 small images: time per image at 100 and 1,000 (bench/results-scale.md)"

# Installs only what is missing; quiet when everything is already there.
setup:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(CARGO) build --release --quiet

build:
	$(CARGO) build --release

# Everything runs in the release profile `setup` just built: dependencies, build scripts and
# proc macros compile once (a dev-profile clippy would build them all a second time).
test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --quiet -- -D warnings
	$(CARGO) test --release -- --test-threads=2

FUZZ_TARGETS := archive_reader reference lock yaml_scan
FUZZ_DIR := tests/fuzz

# Needs a nightly toolchain (sanitizers); installs it and cargo-fuzz when missing. Inputs found
# interesting land in tests/fuzz/work/TARGET (not committed; copy the good ones to corpus/);
# crashes in tests/fuzz/artifacts/TARGET (copy them to tests/fuzz/regressions/TARGET so that
# `make test` replays them on stable).
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p $(FUZZ_DIR)/work/$$t; \
	  $(CARGO) +nightly fuzz run --fuzz-dir $(FUZZ_DIR) $$t $(FUZZ_DIR)/work/$$t $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/regressions/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 || exit 1; \
	done

demo: setup
	@bash samples/demo.sh

# The benchmark driver is its own cargo package (bench/, own workspace) sharing the target dir.
BENCH_TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
BENCH_ENV = AIRLIFT=$(BENCH_TARGET_DIR)/release/airlift BENCH_SCALE=$(or $(BENCH_SCALE),1) BENCH_ROUNDS=$(or $(BENCH_ROUNDS),3)

bench: setup
	@CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) $(CARGO) build --release --quiet --manifest-path bench/Cargo.toml
	$(BENCH_ENV) BENCH_MODE=corpus $(BENCH_TARGET_DIR)/release/airlift-bench

bench-scale: setup
	@CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) $(CARGO) build --release --quiet --manifest-path bench/Cargo.toml
	$(BENCH_ENV) BENCH_MODE=scale $(BENCH_TARGET_DIR)/release/airlift-bench

clean:
	$(CARGO) clean
