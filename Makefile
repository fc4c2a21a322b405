# `make test` is the whole check, on a fresh machine too: it installs and
# starts real Kafka (KRaft, from Maven Central's jars) and Redis (standalone
# and a 3-node cluster, from Debian's packages), builds the Python venv and the
# Kafka Streams peer (bench/jvm, Maven Central's jars),
# validates docker-compose.yml and builds what the Dockerfile builds, installs
# Debian's chromium for the status-page browser test and Debian's prometheus
# for promtool (alert rule tests), runs every Go test with
# the race detector, and stops the services it started even when the tests fail.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
# Each recipe is one shell script (set -euo pipefail), so traps and variables span its lines.
.ONESHELL:

# Override all three to run beside another checkout's services (mind the
# cluster bus ports: each cluster port + 10000).
KAFKA_PORT ?= 19092
REDIS_PORT ?= 16379
REDIS_CLUSTER_PORTS ?= 17000 17001 17002
export KAFKA_PORT REDIS_PORT REDIS_CLUSTER_PORTS

comma := ,
empty :=
space := $(empty) $(empty)

# What the integration tests read (see internal/testenv).
TEST_ENV := KAFKA_BROKERS=127.0.0.1:$(KAFKA_PORT) \
	REDIS_ADDR=127.0.0.1:$(REDIS_PORT) \
	REDIS_CLUSTER_ADDRS=$(subst $(space),$(comma),$(addprefix 127.0.0.1:,$(REDIS_CLUSTER_PORTS))) \
	PYTHON=$(CURDIR)/.venv/bin/python \
	ORACLE_PYTHON=$(CURDIR)/.venv-oracles/bin/python

GO_TEST_FLAGS ?= -race -count=1 -timeout 30m
PKGS ?= ./...

.PHONY: lint test services-up services-down services-status python peer-venv jvm-peer compose-check browser alerts kcat build demo fmt vet model evaluate bench

# One recipe, so the trap can stop the services whatever happens in between;
# the EXIT trap keeps the status of the command that failed. Stale services
# from a crashed run are stopped first so every run starts clean.
test:
	@scripts/kafka.sh stop; scripts/redis.sh stop
	trap 'rc=$$?; trap - EXIT; wait; scripts/kafka.sh stop || true; scripts/redis.sh stop || true; exit $$rc' EXIT
	trap 'exit 130' INT; trap 'exit 143' TERM
	scripts/kafka.sh start & kafka=$$!
	{ $(MAKE) --no-print-directory python && $(MAKE) --no-print-directory peer-venv; } & python=$$!
	scripts/redis.sh start
	$(MAKE) --no-print-directory compose-check
	$(MAKE) --no-print-directory browser
	$(MAKE) --no-print-directory alerts
	$(MAKE) --no-print-directory kcat
	wait $$kafka; wait $$python
	# The Kafka Streams peer, beside lint; after Kafka's start, whose mvn shares ~/.m2.
	$(MAKE) --no-print-directory jvm-peer & jvm=$$!
	export $(TEST_ENV)
	$(MAKE) --no-print-directory lint
	wait $$jvm
	# (bench/jvm's Go test runs the Kafka Streams peer built above against the Go scorer: parity.)
	go test $(GO_TEST_FLAGS) $(PKGS)
	# The benchmark's Python peer must compute what the Go scorer computes (bench/peer).
	.venv-peer/bin/python -m pytest -q -p no:cacheprovider bench/peer
	# The training side (training/tests): windows, leakage guard, parity set, card; make model on
	# the simulator (test AUC within 0.01 of the Bayes AUC) and on a hand-made CSV.
	.venv/bin/python -m pytest -q -p no:cacheprovider training/tests

# Starts the services and leaves them running; stop them with `make services-down`.
services-up:
	@scripts/kafka.sh start & kafka=$$!
	scripts/redis.sh start
	wait $$kafka
	echo "services up; for go test run:"
	for v in $(TEST_ENV); do echo "  export $$v"; done

services-down:
	@scripts/kafka.sh stop
	scripts/redis.sh stop

services-status:
	@scripts/kafka.sh status || true
	scripts/redis.sh status || true

peer-venv:
	@VENV=$(CURDIR)/.venv-peer REQUIREMENTS=bench/peer/requirements.txt scripts/python.sh >/dev/null

# The Kafka Streams peer (bench/jvm): Maven builds bench/jvm/target/jvm-peer.jar and runs its
# JUnit tests; dependencies come from Maven Central once, then from ~/.m2. It needs the JDK and
# Maven that scripts/kafka.sh needs already.
jvm-peer:
	@command -v mvn >/dev/null || { echo "make: mvn not found (Debian: apt-get install maven)" >&2; exit 1; }
	cd bench/jvm && mvn -q -B package

# `make bench`: per-stage Go benchmarks, then the end-to-end run of the Go consumer, the
# Python peer and the Kafka Streams peer (bench/jvm, built first) against real Kafka and Redis
# (cmd/bench); writes out/bench.json. BENCH_FLAGS passes flags to cmd/bench (e.g.
# BENCH_FLAGS="--runs 1 --skip-peer --skip-jvm").
BENCH_FLAGS ?=
bench:
	@scripts/kafka.sh stop; scripts/redis.sh stop
	trap 'rc=$$?; trap - EXIT; wait; scripts/kafka.sh stop || true; scripts/redis.sh stop || true; exit $$rc' EXIT
	trap 'exit 130' INT; trap 'exit 143' TERM
	scripts/kafka.sh start & kafka=$$!
	$(MAKE) --no-print-directory peer-venv & python=$$!
	scripts/redis.sh start
	wait $$kafka
	# After Kafka's start, whose mvn shares ~/.m2.
	$(MAKE) --no-print-directory jvm-peer
	wait $$python
	export $(TEST_ENV)
	mkdir -p out
	go test -run XXX -bench . -benchmem -count 5 ./events/ ./featurestore/ ./scoring/ ./scorer/ ./stream/ | tee out/bench-stages.txt
	go run ./cmd/bench $(BENCH_FLAGS)

python:
	@if [[ -f training/requirements.txt ]]; then \
		scripts/python.sh >/dev/null; \
	else \
		echo "make: WARNING: training/requirements.txt not found; no Python venv, Python-dependent tests will skip or fail" >&2; \
	fi
	# Third-party oracles the Go tests check our output with (hl7apy, fhir.resources).
	VENV=$(CURDIR)/.venv-oracles REQUIREMENTS=pas/testdata/oracles/requirements.txt scripts/python.sh >/dev/null

# docker-compose.yml is for users (no Docker engine here): validate it statically.
compose-check:
	@if [[ ! -f docker-compose.yml ]]; then echo "make: no docker-compose.yml to validate" >&2; exit 0; fi
	if ! command -v docker-compose >/dev/null; then
		echo "make: installing Debian's docker-compose to validate docker-compose.yml" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q --no-install-recommends docker-compose >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends docker-compose >/dev/null; }
	fi
	docker-compose -f docker-compose.yml config -q
	echo "make: docker-compose.yml is valid" >&2
	scripts/dockerfile-check.sh

# The status page is tested in headless Chromium (cmd/demo); Debian's package, with a font
# so the screenshot has text. apt runs here, never beside another apt step.
browser:
	@if command -v chromium >/dev/null; then exit 0; fi
	echo "make: installing Debian's chromium for the status-page browser test" >&2
	export DEBIAN_FRONTEND=noninteractive
	install=(apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core)
	"$${install[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && "$${install[@]}" >/dev/null; }

# The Prometheus alert rules are checked and unit-tested (deploy/prometheus/alerts_test.yml)
# with promtool from Debian's prometheus package; apt runs here, never beside another apt step.
# (Debian's policy-rc.d on these machines keeps the package's server from starting.)
alerts:
	@if ! command -v promtool >/dev/null; then
		echo "make: installing Debian's prometheus for promtool (alert rule tests)" >&2
		export DEBIAN_FRONTEND=noninteractive
		install=(apt-get install -y -q --no-install-recommends prometheus)
		"$${install[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && "$${install[@]}" >/dev/null; }
	fi
	promtool check rules deploy/prometheus/alerts.yml >/dev/null
	promtool test rules deploy/prometheus/alerts_test.yml
	# The scrape config (syntax only: its token file exists inside the compose stack).
	promtool check config --syntax-only deploy/prometheus/prometheus.yml >/dev/null

# Debian's kcat (librdkafka) is the oracle of cmd/consumer/kcat_test.go: a Kafka client we did not write.
kcat:
	@if command -v kcat >/dev/null; then exit 0; fi
	echo "make: installing Debian's kcat for the Kafka client oracle test" >&2
	export DEBIAN_FRONTEND=noninteractive
	install=(apt-get install -y -q --no-install-recommends kcat)
	"$${install[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && "$${install[@]}" >/dev/null; }

build:
	mkdir -p bin
	go build -o bin/ ./...

# HOLD=2m keeps the status page (http://127.0.0.1:9464/status) and /metrics up after the
# run; RATE=300 paces the simulated PAS to watch it live.
HOLD ?= 0s
RATE ?= 0
demo:
	go run ./cmd/demo --hold $(HOLD) --rate $(RATE)

# `make model` rebuilds models/default from the simulator (same seed, same model.txt).
# `make model DATA=appointments.csv [CONFIG=config.json] [OUT=dir]` trains on a trust's
# historical CSV (docs/csv.md) into models/<model_id> (or OUT). See docs/model.md.
# `make model AS_OF=decision [DECISION_LEAD=24h]` builds the decision-time model (rows as of
# start - lead) into models/decision (or OUT, or models/<model_id> with DATA).
model:
	DATA="$(DATA)" CONFIG="$(CONFIG)" OUT="$(OUT)" AS_OF="$(AS_OF)" DECISION_LEAD="$(DECISION_LEAD)" training/build_model.sh

# `make evaluate MODEL=models/<id> DATA=appointments.csv [CONFIG=config.json] [FROM=YYYY-MM-DD]
# [TO=YYYY-MM-DD] [OUT=dir]` scores a trust's historical CSV (docs/csv.md) with any model
# directory, as the Go scorer serves it, and writes evaluation.json and evaluation.html into
# out/evaluation-<model_id> (or OUT). `AS_OF=decision [DECISION_LEAD=24h]
# BOOKING_MODEL=models/default` evaluates a decision-time model as of the decision point and
# reports AUC at booking (BOOKING_MODEL) vs at decision time (MODEL). See docs/model.md.
evaluate:
	MODEL="$(MODEL)" DATA="$(DATA)" CONFIG="$(CONFIG)" FROM="$(FROM)" TO="$(TO)" OUT="$(OUT)" AS_OF="$(AS_OF)" DECISION_LEAD="$(DECISION_LEAD)" BOOKING_MODEL="$(BOOKING_MODEL)" training/evaluate.sh

fmt:
	gofmt -l -w .

# Static analysis, zero findings: staticcheck pinned here and fetched through the Go module
# proxy (no install step), gofmt and go vet. `make test` runs it first.
STATICCHECK_VERSION := v0.8.2
lint:
	@unformatted=$$(gofmt -l . | grep -v '^.venv' || true)
	if [[ -n "$$unformatted" ]]; then echo "make lint: not gofmt-ed:" $$unformatted >&2; exit 1; fi
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	echo "make lint: gofmt, go vet and staticcheck $(STATICCHECK_VERSION) found nothing" >&2

vet:
	go vet ./...

# `make chaos` proves fault tolerance end to end (docs/chaos.md): the producer, scorers and
# dispatcher as real processes on their own Kafka and Redis (CHAOS_KAFKA_PORT,
# CHAOS_REDIS_PORT), over 100,000 events, with scorers killed, the group rebalanced, Redis
# and Kafka restarted, Redis slowed, malformed events and Notify failing. It writes
# out/chaos.json and fails on any lost, double-counted, duplicated or missing output.
# CHAOS_FLAGS passes more flags (e.g. --profile ci for the short run `make test` includes).
CHAOS_KAFKA_PORT ?= 30192
CHAOS_REDIS_PORT ?= 30379
.PHONY: chaos
chaos:
	go run ./cmd/chaos --kafka-port $(CHAOS_KAFKA_PORT) --redis-port $(CHAOS_REDIS_PORT) $(CHAOS_FLAGS)
