# wsproxy: `make` builds, `make test` installs what the tests need and runs every check,
# `make bench` compares wsproxy with websockify (and later websocat, socat).
CARGO ?= cargo
PREFIX ?= /usr/local
APT_PACKAGES := gcc binutils python3 openssl

.PHONY: all build test deps fmt-check clippy unit-and-e2e bench install demo clean

all: build

build:
	$(CARGO) build --release -p wsproxy -p rebind

# Installs system packages the tests use, only when something is missing (CI runs on a clean clone).
deps:
	@missing=""; \
	for cmd in cc nm python3 openssl; do command -v $$cmd >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
		else echo "make deps: please install: $(APT_PACKAGES) (as root: apt-get install $(APT_PACKAGES))"; exit 1; fi; \
	fi

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-and-e2e:
	$(CARGO) test --workspace

test: deps fmt-check clippy unit-and-e2e

bench: build
	scripts/bench-peers
	$(CARGO) build --release -p wsproxy-bench
	target/release/wsproxy-bench throughput --size-mib 512 --rounds 3 \
		--proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
		--proxy 'websockify=target/bench-venv/bin/websockify 127.0.0.1:{listen} {target}' \
		--json target/bench.json

install: build
	install -D -m 0755 target/release/wsproxy $(DESTDIR)$(PREFIX)/bin/wsproxy
	install -D -m 0644 target/release/librebind.so $(DESTDIR)$(PREFIX)/lib/wsproxy/librebind.so
	install -D -m 0755 scripts/rebind $(DESTDIR)$(PREFIX)/bin/rebind

demo:
	@echo "make demo arrives with the browser consoles (web/); meanwhile: make build && target/release/wsproxy --help"

clean:
	$(CARGO) clean
