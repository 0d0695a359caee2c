# ckptd entry points. Everything runs as root on Debian 12 (CRIU needs it): as root, or with sudo.
#   make run        set up if needed, build, run the daemon in the foreground with its defaults
#   make test       set up if needed, then fmt check, clippy -D warnings, OpenAPI check, all tests
CARGO ?= cargo
# The virtualenv make setup creates for the OpenAPI validator.
PYTHON ?= /var/cache/ckptd-setup/venv/bin/python

.PHONY: setup build run test lint openapi schemathesis install bench clean

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
	python3 scripts/check_layers.py

# Property-based API tests from openapi.yaml, the daemon in its own PID namespace.
schemathesis: setup
	$(CARGO) build -p ckptd
	bash scripts/schemathesis.sh

# A one-off build has no use for incremental caches (GBs on a fresh clone, and CI machines can be
# short of disk): make test goes without them unless CARGO_INCREMENTAL says otherwise.
test: export CARGO_INCREMENTAL ?= 0
test: setup lint openapi
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	SEED=20261127 bash scripts/schemathesis.sh

# Speed, against CRIU by hand; writes BENCHMARKS.md (not part of make test).
bench: build
	bash scripts/bench.sh

# Binaries to /usr/local/bin, units and snippets to /etc/systemd and /etc/{sysusers,tmpfiles}.d.
PREFIX ?= /usr/local
install: build
	install -D -m 0755 target/release/ckptd $(DESTDIR)$(PREFIX)/bin/ckptd
	install -D -m 0755 target/release/ckpt $(DESTDIR)$(PREFIX)/bin/ckpt
	install -D -m 0644 systemd/ckptd.service $(DESTDIR)/etc/systemd/system/ckptd.service
	install -D -m 0644 systemd/ckptd.socket $(DESTDIR)/etc/systemd/system/ckptd.socket
	install -D -m 0644 systemd/sysusers.d/ckptd.conf $(DESTDIR)/etc/sysusers.d/ckptd.conf
	install -D -m 0644 systemd/tmpfiles.d/ckptd.conf $(DESTDIR)/etc/tmpfiles.d/ckptd.conf
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/ckptd/README.md
	@echo "installed; then: systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload && systemctl enable --now ckptd.socket"

clean:
	$(CARGO) clean
