# airlift — see README.md. Every target works on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
APT_PACKAGES := docker-registry skopeo b3sum openssl apache2-utils tar coreutils python3 python3-jsonschema
# Seconds each fuzz target runs under `make fuzz`.
FUZZ_SECONDS ?= 60

.PHONY: help setup build test demo clean

help:
	@echo "make demo   - install what is missing, start local registries, run the walk-through"
	@echo "make test   - fmt, clippy and the whole test suite (real registries on 127.0.0.1)"
	@echo "make setup  - install missing Debian packages and build the release binary"

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

# Tests run against the release build `setup` just made, so dependencies compile once.
test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
	$(CARGO) test --release -- --test-threads=2

demo: setup
	@bash samples/demo.sh

clean:
	$(CARGO) clean
