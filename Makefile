# The whole set-up on a fresh machine is `make up` (run cutover on the
# shipped deploy.yaml) or `make test` (run every test). Both install what
# the build needs first.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## schemathesis (PyPI), pinned, in a venv of its own: `make schemathesis`
## runs it against a live cutover (.ci/schemathesis).
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_VENV := target/schemathesis-venv
SCHEMATHESIS := $(SCHEMATHESIS_VENV)/bin/schemathesis

.PHONY: up test fuzz schemathesis deps build bench bench-deploy bench-upgrade bench-websocket bench-idle bench-scale bench-peers bench-tls selfsigned

## Install prerequisites when missing: pingora needs cmake (zlib-ng) and a
## C toolchain; the test runner is cargo-nextest; the admin API's
## conformance run uses schemathesis (pinned, in a venv); the metrics tests run a
## real Prometheus (Debian's prometheus package, which brings promtool);
## the ACME tests run a real ACME server (Debian's pebble package, which
## brings pebble-challtestsrv); the TLS tests use curl (HTTP/2) and
## openssl's s_client as real clients.
deps:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "installing cmake and a C toolchain (pingora builds zlib-ng with them)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake build-essential pkg-config; }
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@command -v c++ >/dev/null 2>&1 || { \
		echo "installing a C++ compiler (libFuzzer is C++)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq build-essential; }
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		echo "installing prometheus and promtool (the metrics and dashboard tests run them)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus; }
	@command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 || { \
		echo "installing pebble and pebble-challtestsrv (the ACME tests run a real ACME server)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq pebble; }
	@command -v curl >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 || { \
		echo "installing curl, openssl and python3 (real clients, and an HTTP/1-only app, for the TLS and h2c tests)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq curl openssl python3; }
	@python3 -m venv --help >/dev/null 2>&1 || { \
		echo "installing python3-venv (schemathesis runs in a venv)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	@command -v $(SCHEMATHESIS) >/dev/null 2>&1 && $(SCHEMATHESIS) --version 2>/dev/null | grep -qF '$(SCHEMATHESIS_VERSION)' || { \
		echo "installing schemathesis $(SCHEMATHESIS_VERSION) into $(SCHEMATHESIS_VENV) (the admin API's conformance run)"; \
		python3 -m venv $(SCHEMATHESIS_VENV) && \
		$(SCHEMATHESIS_VENV)/bin/pip install -q --disable-pip-version-check 'schemathesis==$(SCHEMATHESIS_VERSION)'; }

build: deps
	$(CARGO) build --release --bins

## Run cutover on the shipped deploy.yaml (demo app included).
up: build
	./target/release/cutover up -c deploy.yaml

## Run the whole test suite.
test: deps
	$(CARGO) nextest run --workspace --no-fail-fast

## schemathesis against a live cutover: every answer of the admin API
## conforms to its /openapi.json and none is a 5xx (a few minutes at most;
## see .ci/schemathesis for knobs).
schemathesis: deps
	SCHEMATHESIS=$(CURDIR)/$(SCHEMATHESIS) .ci/schemathesis

## Fuzz every cargo-fuzz target (proxy/fuzz, control/fuzz) for a bounded
## time each (FUZZ_SECONDS, default 45); fails on any crash. See .ci/fuzz.
fuzz: deps
	.ci/fuzz

## Micro-benchmarks (by hand, not in CI).
bench: deps
	$(CARGO) bench --bench route_lookup

## 20 rolling deploys under sustained load (by hand, not in CI).
bench-deploy: build
	$(CARGO) bench --bench deploy_under_load

## 5 upgrades of cutover itself under sustained load (by hand, not in CI).
bench-upgrade: build
	$(CARGO) bench --bench upgrade_under_load

## 5,000 idle WebSockets: memory per connection, time to drain them all.
bench-websocket: build
	$(CARGO) bench --bench websocket_drain

## Memory at idle and with 5,000 idle keep-alive connections.
bench-idle: build
	$(CARGO) bench --bench idle_keepalive

## nginx, HAProxy and cutover (one worker each) in one run: RSS per idle
## keep-alive connection and per idle WebSocket, RSS after they close, and
## cutover's close of every WebSocket on a deploy (knobs: benches/conn_scale.rs).
bench-scale: build
	$(CARGO) bench --bench conn_scale

## cutover against HAProxy, nginx and Caddy (see benches/peers.sh for knobs).
bench-peers: deps
	benches/peers.sh

## cutover against HAProxy and nginx over TLS: handshakes, keep-alive
## HTTPS, HTTP/2 (see benches/tls_peers.sh for knobs).
bench-tls: deps
	benches/tls_peers.sh

## A self-signed certificate for localhost (30 days), for the commented TLS
## block of deploy.yaml. Never committed: made here, on your machine.
selfsigned:
	@mkdir -p certs
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout certs/localhost.key -out certs/localhost.pem
	@chmod 600 certs/localhost.key
