# ckptd entry points. Everything runs as root on Debian 12 (CRIU needs it).
#   sudo make run    set up if needed, build, run the daemon in the foreground with its defaults
#   sudo make test   set up if needed, then fmt check, clippy -D warnings, OpenAPI check, all tests
CARGO ?= cargo
# The virtualenv make setup creates for the OpenAPI validator.
PYTHON ?= /var/cache/ckptd-setup/venv/bin/python

.PHONY: setup build run test lint openapi schemathesis clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

run: build
	./target/release/ckptd

openapi: setup
	$(PYTHON) scripts/check_openapi.py openapi.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Property-based API tests from openapi.yaml, the daemon in its own PID namespace.
schemathesis: setup
	$(CARGO) build -p ckptd
	bash scripts/schemathesis.sh

test: setup lint openapi
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	SEED=20261127 bash scripts/schemathesis.sh

clean:
	$(CARGO) clean
