#!/usr/bin/env bash
# Rebuilds models/default from the simulator, end to end and reproducibly:
#
#   cmd/producer (sim, fixed seed) -> events.jsonl + truth.csv
#   cmd/trainset                   -> trainset.csv (the live feature code, replayed)
#   training/train.py              -> model.txt, contract.json, parity.csv, card.json
#
# then runs the Go parity test against the new model.
#
#   training/build_default_model.sh
#
# Environment (defaults in brackets): PATIENTS [50000], DAYS [365], SEED [42],
# OUT [models/default], PYTHON [.venv/bin/python; created from training/requirements.txt
# if missing], KEEP (a directory to keep the intermediate files in, instead of a temporary one).
# About 230,000 training rows; a couple of minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PATIENTS="${PATIENTS:-50000}"
DAYS="${DAYS:-365}"
SEED="${SEED:-42}"
OUT="${OUT:-models/default}"
PYTHON="${PYTHON:-.venv/bin/python}"

# Simulated patients only: this key pseudonymises made-up NHS numbers and protects nothing.
# Never use it, or anything like it, for real data.
export DNA_PSEUDONYM_SECRET=training-only-not-a-secret-000000

log() { echo "build_default_model: $*" >&2; }

if [[ -n "${KEEP:-}" ]]; then
	WORK="$KEEP"
	mkdir -p "$WORK"
else
	WORK="$(mktemp -d)"
	trap 'rm -rf "$WORK"' EXIT
fi

if [[ ! -x "$PYTHON" ]]; then
	log "creating .venv from training/requirements.txt"
	python3 -m venv .venv
	.venv/bin/pip install -q -r training/requirements.txt
	PYTHON=.venv/bin/python
fi
want="$(sed -n 's/^lightgbm==//p' training/requirements.txt)"
have="$("$PYTHON" -c 'import lightgbm; print(lightgbm.__version__)')"
if [[ "$have" != "$want" ]]; then
	log "ERROR: $PYTHON has LightGBM $have, training/requirements.txt pins $want: run $PYTHON -m pip install -r training/requirements.txt"
	exit 1
fi

start=$SECONDS
log "simulating $PATIENTS patients over $DAYS days (seed $SEED)"
go run ./cmd/producer --source sim --seed "$SEED" --patients "$PATIENTS" --days "$DAYS" \
	--out "$WORK/events.jsonl" --truth "$WORK/truth.csv"
log "replaying $(wc -l <"$WORK/events.jsonl") events into a training set"
go run ./cmd/trainset -in "$WORK/events.jsonl" -truth "$WORK/truth.csv" -out "$WORK/trainset.csv"
log "training"
"$PYTHON" training/train.py --trainset "$WORK/trainset.csv" --out "$OUT"

if [[ "$(cd "$OUT" && pwd)" == "$ROOT/models/default" ]]; then
	log "checking Go parity with LightGBM"
	go test -count=1 -run 'TestParity$' -v ./scoring | grep -E 'parity_test|^(ok|FAIL|---)' >&2
fi
log "done in $((SECONDS - start)) s: $OUT ($(du -sh "$OUT" | cut -f1))"
