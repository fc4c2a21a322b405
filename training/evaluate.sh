#!/usr/bin/env bash
# Evaluates a model directory (trained anywhere) on a trust's own historical appointments, so
# a trust can say "we compared it with our own data" before it runs a model trained elsewhere:
#
#   make evaluate MODEL=models/default DATA=appointments.csv [CONFIG=config.json] [FROM=2025-07-01] [TO=2026-01-01] [OUT=dir]
#   make evaluate MODEL=models/decision AS_OF=decision [DECISION_LEAD=24h] [BOOKING_MODEL=models/default] DATA=...
#
# DATA (docs/csv.md layout) -> cmd/trainset -csv -model MODEL: the whole file replayed
# point-in-time (history before the window counts), the booking extras read with the model's
# own code lists (its contract), every labelled row scored by the Go scorer as served
# (scoring.Model.Vector, Score with the contract's calibration, Band) -> training/evaluate.py:
# the appointments whose UK date is in [FROM, TO) measured -> OUT/evaluation.json and
# OUT/evaluation.html (aggregates only: no row of DATA is written to OUT).
#
# Environment (defaults in brackets): MODEL, DATA (required), CONFIG (a training-style config;
# its "sensitive" columns join the subgroup table), FROM, TO (appointment dates, YYYY-MM-DD, FROM
# inclusive, TO exclusive) [the whole file], OUT [out/evaluation-<model_id>], PYTHON [the .venv
# that scripts/python.sh builds], HISTORY_RETENTION [26280h, must equal the consumer's],
# CSV_TIMEZONE [Europe/London] and CSV_DATE_ONLY_TIME [23:59] (how DATA's times are read),
# AS_OF [booking] (decision: every row scored as of its decision point, DECISION_LEAD [24h]
# before the start, as a decision-time model is served; appointments booked after it have no
# row), BOOKING_MODEL (with AS_OF=decision: also score the same appointments as of their
# booking with this model, and report AUC at booking vs at decision time on the appointments
# both have, with a paired DeLong interval of the difference).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-}"
DATA="${DATA:-}"
CONFIG="${CONFIG:-}"
FROM="${FROM:-}"
TO="${TO:-}"
OUT="${OUT:-}"
HISTORY_RETENTION="${HISTORY_RETENTION:-26280h}"
AS_OF="${AS_OF:-booking}"
DECISION_LEAD="${DECISION_LEAD:-24h}"
BOOKING_MODEL="${BOOKING_MODEL:-}"

log() { echo "evaluate: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -n "$MODEL" ]] || die "MODEL is not set: give the model directory to evaluate, e.g. make evaluate MODEL=models/default DATA=appointments.csv"
[[ -n "$DATA" ]] || die "DATA is not set: give the trust's appointments CSV (docs/csv.md), e.g. make evaluate MODEL=$MODEL DATA=appointments.csv"
[[ -d "$MODEL" ]] || die "MODEL=$MODEL: no such directory"
[[ -f "$DATA" ]] || die "DATA=$DATA: no such file"
[[ -z "$CONFIG" || -f "$CONFIG" ]] || die "CONFIG=$CONFIG: no such file"
for v in FROM TO; do
	d="${!v}"
	if [[ -n "$d" ]] && ! [[ "$d" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ && "$(date -u -d "$d" +%F 2>/dev/null)" == "$d" ]]; then
		die "$v=$d: want an appointment date as YYYY-MM-DD"
	fi
done
[[ -z "$FROM" || -z "$TO" || "$FROM" < "$TO" ]] || die "TO=$TO is not after FROM=$FROM (FROM is inclusive, TO exclusive)"
[[ "$AS_OF" == booking || "$AS_OF" == decision ]] || die "AS_OF=$AS_OF: want booking or decision"
[[ -z "$BOOKING_MODEL" || "$AS_OF" == decision ]] || die "BOOKING_MODEL needs AS_OF=decision (it is the booking-time model to compare the decision-time MODEL with)"
[[ -z "$BOOKING_MODEL" || -d "$BOOKING_MODEL" ]] || die "BOOKING_MODEL=$BOOKING_MODEL: no such directory"
ASOF_ARGS=(-as-of "$AS_OF")
[[ "$AS_OF" == booking ]] || ASOF_ARGS+=(-decision-lead "$DECISION_LEAD")

start=$SECONDS
PYTHON="${PYTHON:-$(scripts/python.sh)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log "building cmd/trainset"
go build -o "$WORK/bin/" ./cmd/trainset

# The config's sensitive columns are read as categories for the subgroup table (a column the
# model uses keeps the model's own type and code list).
EXTRAS=""
if [[ -n "$CONFIG" ]]; then
	EXTRAS="$("$PYTHON" -c '
import json, sys
try:
    cfg = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"evaluate: ERROR: CONFIG={sys.argv[1]} is not JSON: {e}")
sens = cfg.get("sensitive", []) if isinstance(cfg, dict) else []
print(",".join(f"{k}:categorical" for k in sens if isinstance(k, str)))
' "$CONFIG")"
fi

log "reading $DATA and scoring it with $MODEL as of $AS_OF (the Go scorer, point-in-time features from the whole file)"
if ! "$WORK/bin/trainset" -csv "$DATA" -model "$MODEL" -out "$WORK/scored.csv" -summary "$WORK/summary.json" \
	-extras "$EXTRAS" -history-retention "$HISTORY_RETENTION" "${ASOF_ARGS[@]}" \
	-csv-timezone "${CSV_TIMEZONE:-Europe/London}" -csv-date-only-time "${CSV_DATE_ONLY_TIME:-23:59}"; then
	die "cmd/trainset could not score $DATA with $MODEL (the reason is above)"
fi
if [[ -n "$BOOKING_MODEL" ]]; then
	log "scoring the same file with $BOOKING_MODEL as of each booking, for AUC at booking vs at decision time"
	if ! "$WORK/bin/trainset" -csv "$DATA" -model "$BOOKING_MODEL" -out "$WORK/booking_scored.csv" -summary "$WORK/booking_summary.json" \
		-history-retention "$HISTORY_RETENTION" -as-of booking \
		-csv-timezone "${CSV_TIMEZONE:-Europe/London}" -csv-date-only-time "${CSV_DATE_ONLY_TIME:-23:59}"; then
		die "cmd/trainset could not score $DATA with $BOOKING_MODEL (the reason is above)"
	fi
fi
MODEL_ID="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_id"])' "$WORK/summary.json")"
OUT="${OUT:-out/evaluation-$MODEL_ID}"

ARGS=(--trainset "$WORK/scored.csv" --summary "$WORK/summary.json" --model "$MODEL" --out "$WORK/out"
	--data-name "$(basename "$DATA")" --data-sha256 "$(sha256sum "$DATA" | cut -d' ' -f1)")
[[ -z "$CONFIG" ]] || ARGS+=(--config "$CONFIG")
[[ -z "$FROM" ]] || ARGS+=(--from "$FROM")
[[ -z "$TO" ]] || ARGS+=(--to "$TO")
[[ -z "$BOOKING_MODEL" ]] || ARGS+=(--booking-trainset "$WORK/booking_scored.csv" --booking-model "$BOOKING_MODEL")
"$PYTHON" training/evaluate.py "${ARGS[@]}" || die "no evaluation written (the reason is above)"

# Only the two aggregate files reach OUT; the scored rows stay in WORK, which is removed.
mkdir -p "$OUT"
mv -f "$WORK/out/evaluation.json" "$WORK/out/evaluation.html" "$OUT/"
log "done in $((SECONDS - start)) s: $OUT/evaluation.html, $OUT/evaluation.json"
