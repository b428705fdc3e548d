# wsproxy: `make` builds, `make test` installs what the tests need and runs every check,
# `make bench` compares wsproxy with websockify, websocat and socat.
CARGO ?= cargo
PREFIX ?= /usr/local
# command:package pairs: `make deps` installs the package when the command is missing.
# in.telnetd (netkit, listens by itself with -debug) and vncserver/Xvnc are the real servers of the
# wrap-mode tests; chromium drives the browser tests.
DEPS := cc:gcc nm:binutils python3:python3 openssl:openssl in.telnetd:telnetd-ssl \
	vncserver:tigervnc-standalone-server xauth:xauth chromium:chromium

.PHONY: all build test deps fmt-check clippy unit-and-e2e bench install demo clean

all: build

build:
	$(CARGO) build --release -p wsproxy -p rebind

# Installs system packages the tests use, only when something is missing (CI runs on a clean clone).
deps:
	@missing=""; \
	for pair in $(DEPS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "make deps: installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "make deps: please install:$$missing (as root: apt-get install$$missing)"; exit 1; fi; \
	fi

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-and-e2e:
	$(CARGO) test --workspace

test: deps fmt-check clippy unit-and-e2e

# Every scenario against websockify, websocat and socat (a raw TCP relay in front of the
# in-process WebSocket server), then wss:// throughput. BENCH_ARGS replaces the sizes, e.g.
# make bench BENCH_ARGS='--size-mib 16 --rounds 1 --round-trips 1000 --rtt-secs 1 --connects-secs 1 --idle-conns 500'
bench: build
	scripts/bench-peers
	$(CARGO) build --release -p wsproxy-bench
	target/release/wsproxy-bench all $(or $(BENCH_ARGS),--size-mib 512 --rounds 3) \
		--proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
		--proxy 'websockify=target/bench-venv/bin/websockify 127.0.0.1:{listen} {target}' \
		--proxy 'websocat=target/bench-tools/bin/websocat --binary ws-l:127.0.0.1:{listen} tcp:{target}' \
		--proxy 'socat=socat -b262144 TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay TCP:{ws-target},nodelay' \
		--json target/bench.json
	target/release/wsproxy-bench throughput --tls target/bench-cert.pem --size-mib 256 --rounds 3 \
		--proxy 'wsproxy=target/release/wsproxy --cert target/bench-cert.pem 127.0.0.1:{listen} {target}' \
		--proxy 'websockify=target/bench-venv/bin/websockify --cert target/bench-cert.pem 127.0.0.1:{listen} {target}' \
		--json target/bench-tls.json

install: build
	install -D -m 0755 target/release/wsproxy $(DESTDIR)$(PREFIX)/bin/wsproxy
	install -D -m 0644 target/release/librebind.so $(DESTDIR)$(PREFIX)/lib/wsproxy/librebind.so
	install -D -m 0755 scripts/rebind $(DESTDIR)$(PREFIX)/bin/rebind

demo:
	@echo "make demo arrives with the browser consoles (web/); meanwhile: make build && target/release/wsproxy --help"

clean:
	$(CARGO) clean
