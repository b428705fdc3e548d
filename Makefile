# wsproxy: `make` builds, `make test` installs what the tests need and runs every check,
# `make bench` compares wsproxy with websockify, websocat and socat.
CARGO ?= cargo
PREFIX ?= /usr/local
# COMMAND:PACKAGE (or :PACKAGE) pairs for scripts/need-apt, which installs what is missing: what the
# cargo tests run (the C fixture, python3 -m http.server, openssl for certificates; a telnetd: the one
# installed, netkit's in.telnetd or inetutils' telnetd, run by scripts/telnetd-once, and telnetd-ssl
# only when there is none, plus inetutils-telnetd's libraries for the test that runs its unpacked copy;
# vncserver, whose Xvnc needs the fixed font; redis-server for the TokenRedis tests, started by the
# tests themselves on loopback ports; QEMU, whose monitor a sessions test opens on a UNIX socket;
# promtool, from the large prometheus package, which checks a scrape of --metrics; sshd, which the
# placement tests start on loopback addresses as the hosts a session's command is launched on over
# ssh; asciinema, which
# reads an --record-format asciicast recording back under util-linux's script for the terminal it
# wants), and what make deb runs (dpkg-shlibdeps computes the package's Depends, objcopy moves the
# debug info into the -dbgsym package). The browser tests install their own list (tests/browser/run),
# as scripts/demo does. systemd's systemd-socket-activate and systemd-analyze start wsproxy in the
# socket-activation tests and rate the unit's sandbox (no systemd runs). QEMU's WebSocket VNC port
# and websocket=on monitor serve the ws_target tests; Python's websockets is an independent client of
# the base64 subprotocol.
DEPS := cc:gcc nm:binutils python3:python3 openssl:openssl \
	'in.telnetd|telnetd:telnetd-ssl' :libkrb5-3 :libk5crypto3 :libcom-err2 :libtinfo6 vncserver:tigervnc-standalone-server :xfonts-base redis-server:redis-server \
	qemu-system-x86_64:qemu-system-x86 promtool:prometheus dpkg-shlibdeps:dpkg-dev objcopy:binutils \
	asciinema:asciinema script:bsdutils sshd:openssh-server \
	systemd-socket-activate:systemd systemd-analyze:systemd :python3-websockets

.PHONY: all build web test deps fmt-check clippy unit-and-e2e api-conformance autobahn fuzz soak soak-short browser-test deb deb-test bench install demo clean

all: build web

build:
	$(CARGO) build --release -p wsproxy -p rebind

# The npm packages the pages in web/ load (noVNC, xterm.js), pinned by web/package-lock.json.
web:
	scripts/npm-ci web

# Installs system packages the tests use, only when something is missing (CI runs on a clean clone),
# and unpacks (never installs) inetutils-telnetd into target/debs/ for the test of that flavour.
deps:
	scripts/need-apt $(DEPS)
	scripts/unpack-deb inetutils-telnetd target/debs/inetutils-telnetd

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-and-e2e:
	$(CARGO) test --workspace

# The sessions API against its OpenAPI document: schemathesis (PyPI, in target/schemathesis-venv)
# fuzzes a wsproxy --sessions on a free loopback port; reports in test-output/api-conformance/.
# Uses target/debug/wsproxy, which unit-and-e2e builds (WSPROXY=path for another).
api-conformance:
	scripts/api-conformance

# The Autobahn|Testsuite's fuzzing client (kosoku, PyPI, in target/kosoku-venv) through wsproxy in
# front of an echo target, every case (about 65 s); report in test-output/autobahn/. Fails unless
# each case passes or fails by design for a byte relay (scripts/autobahn-check says which).
# Uses target/debug/wsproxy, which unit-and-e2e builds (WSPROXY=path for another).
autobahn:
	scripts/autobahn

# Coverage-guided fuzzing of wsproxy/fuzz/'s targets with libFuzzer (nightly, cargo-fuzz installed
# into target/cargo-fuzz), FUZZ_SECONDS each (default 60). Not part of `make test`, which runs the
# same targets on stable over the seed corpus and generated inputs (cargo test ... fuzzing).
fuzz:
	scripts/fuzz $(FUZZ_SECONDS)

# Soak: 1,000 sessions at once with traffic both ways (every echo compared) for 10 minutes while
# token targets, wrapped commands and on-demand session commands are SIGKILLed at random
# (wsproxy-bench soak); fails on a crash, a failed session on a living target, fds not back
# within 5 % of the baseline after the load (memory: 5 % or 1 MiB), a session command left
# running, or a zombie. soak-short, the same for 60 s, is part of `make test`.
SOAK = target/release/wsproxy-bench soak --wsproxy target/release/wsproxy --sessions 1000

soak: build
	$(CARGO) build --release -p wsproxy-bench
	$(SOAK) --secs 600

soak-short: build
	$(CARGO) build --release -p wsproxy-bench
	$(SOAK) --secs 60

# The consoles in headless Chromium against a real Xvnc, telnetd and a serial line.
browser-test: build
	tests/browser/run

# The Debian package target/debian/wsproxy_VERSION-1_ARCH.deb (and its -dbgsym .ddeb) from the
# release binaries: wsproxy, librebind.so, rebind, the pages with their npm packages, the units of
# packaging/systemd/, a man page and bash/zsh/fish completions generated from the clap definition
# (xtask). scripts/deb installs cargo-deb into target/tools/ the first time.
deb: build web
	scripts/deb

# Installs the package with dpkg into an empty directory tree and runs a relay, wrap mode and
# rebind from the installed files (scripts/test-deb). Reuses make build's binaries.
deb-test: deb
	scripts/test-deb

test: deps fmt-check clippy unit-and-e2e api-conformance autobahn browser-test deb-test soak-short

# Every scenario against websockify, websocat, socat and raw-relay (two raw TCP relays in front
# of the in-process WebSocket server: what one more hop costs), then wss:// throughput. The
# connects scenario also runs wsproxy and websockify routing by token (--token-proxy), each with
# 10,000 tokens in a TokenFile and in a TokenRedis (a redis-server the benchmark starts on a free
# port), right after the same proxy without tokens: the token rows and targets are the ratios.
# scripts/bench-peers installs the peers and redis-server. BENCH_ARGS replaces the sizes, e.g.
# make bench BENCH_ARGS='--size-mib 16 --rounds 1 --round-trips 1000 --rtt-secs 1 --connects-secs 1 --idle-conns 500'
# Then what --metrics costs: connects and throughput of wsproxy with and without it, side by side
# (wsproxy-metrics over wsproxy is the cost; the issue allows 3 %).
# Then --workers: connects and round trips on 64 connections with 1 and with 2 event loops, side by
# side (wsproxy-2-workers over wsproxy-1-worker is what a second core gives on this machine).
# Last, wsproxy's on-demand sessions (about 15 s, whatever BENCH_ARGS says): launches of
# `wsproxy-bench echo-server` on first connect, each next to a start of the same command alone
# (the overhead is the difference), and reservations per second from 16 keep-alive API clients.
# Last, scale-out through Redis (about 40 s): reservations per second through one instance and through
# three sharing a redis-server (24 keep-alive clients spread over them, each reservation deleted at
# once), and the extra latency (p50/p99) of round trips and connects through an instance other than
# the one that launched the session.
bench: build
	scripts/bench-peers
	$(CARGO) build --release -p wsproxy-bench
	target/release/wsproxy-bench all $(or $(BENCH_ARGS),--size-mib 512 --rounds 5) \
		--proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
		--proxy 'websockify=target/bench-venv/bin/websockify 127.0.0.1:{listen} {target}' \
		--proxy 'websocat=target/bench-tools/bin/websocat --binary ws-l:127.0.0.1:{listen} tcp:{target}' \
		--proxy 'socat=socat -b262144 TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay TCP:{ws-target},nodelay' \
		--proxy 'raw-relay=target/release/wsproxy-bench relay 127.0.0.1:{listen} {ws-target}' \
		--token-proxy 'wsproxy=target/release/wsproxy --token-plugin TokenFile --token-source {token-file} 127.0.0.1:{listen}' \
		--token-proxy 'wsproxy=target/release/wsproxy --token-plugin TokenRedis --token-source {redis} 127.0.0.1:{listen}' \
		--token-proxy 'websockify=target/bench-venv/bin/websockify --token-plugin TokenFile --token-source {token-file} 127.0.0.1:{listen}' \
		--token-proxy 'websockify=target/bench-venv/bin/websockify --token-plugin TokenRedis --token-source {redis} 127.0.0.1:{listen}' \
		--json target/bench.json
	target/release/wsproxy-bench throughput --tls target/bench-cert.pem --size-mib 256 --rounds 3 \
		--proxy 'wsproxy=target/release/wsproxy --cert target/bench-cert.pem 127.0.0.1:{listen} {target}' \
		--proxy 'websockify=target/bench-venv/bin/websockify --cert target/bench-cert.pem 127.0.0.1:{listen} {target}' \
		--json target/bench-tls.json
	target/release/wsproxy-bench connects --rounds 5 \
		--proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
		--proxy 'wsproxy-metrics=target/release/wsproxy --metrics 127.0.0.1:0 127.0.0.1:{listen} {target}' \
		--json target/bench-metrics-connects.json
	target/release/wsproxy-bench throughput --size-mib 256 --rounds 5 \
		--proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
		--proxy 'wsproxy-metrics=target/release/wsproxy --metrics 127.0.0.1:0 127.0.0.1:{listen} {target}' \
		--json target/bench-metrics-throughput.json
	target/release/wsproxy-bench connects --rounds 5 \
		--proxy 'wsproxy-1-worker=target/release/wsproxy --workers 1 127.0.0.1:{listen} {target}' \
		--proxy 'wsproxy-2-workers=target/release/wsproxy --workers 2 127.0.0.1:{listen} {target}' \
		--json target/bench-workers-connects.json
	target/release/wsproxy-bench rtt --rounds 5 \
		--proxy 'wsproxy-1-worker=target/release/wsproxy --workers 1 127.0.0.1:{listen} {target}' \
		--proxy 'wsproxy-2-workers=target/release/wsproxy --workers 2 127.0.0.1:{listen} {target}' \
		--json target/bench-workers-rtt.json
	target/release/wsproxy-bench sessions --rounds 3 --launches 10 --reserve-conns 16 --reserve-secs 3 \
		--proxy 'wsproxy=target/release/wsproxy --sessions {services} 127.0.0.1:{listen}' \
		--json target/bench-sessions.json
	target/release/wsproxy-bench cluster --rounds 3 --instances 3 --reserve-conns 24 --reserve-secs 3 \
		--proxy 'wsproxy=target/release/wsproxy --sessions {services} 127.0.0.1:{listen}' \
		--json target/bench-cluster.json

install: build
	install -D -m 0755 target/release/wsproxy $(DESTDIR)$(PREFIX)/bin/wsproxy
	install -D -m 0644 target/release/librebind.so $(DESTDIR)$(PREFIX)/lib/wsproxy/librebind.so
	install -D -m 0755 scripts/rebind $(DESTDIR)$(PREFIX)/bin/rebind

# A VNC desktop and a telnet console behind wsproxy on 127.0.0.1; prints the URLs, Ctrl+C stops all.
demo: build
	scripts/demo

clean:
	$(CARGO) clean
