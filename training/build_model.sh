#!/usr/bin/env bash
# Builds a model directory end to end: training set (the Go feature code, replayed
# point-in-time) and its flip check, LightGBM training on windows by appointment date with the
# leakage guard, calibration decision, bands, Go parity check on synthetic rows, model card
# (card.json, card.md, card.html), training reference for drift monitoring (reference.json).
#
#   make model                                   # = training/build_model.sh: models/default from the simulator
#   make model DATA=appointments.csv [CONFIG=training/config.example.json] [OUT=models/mine]
#   make model AS_OF=decision [DECISION_LEAD=24h]   # models/decision: the decision-time model
#   make model CONFIG=training/config.challenger.json OUT=models/challenger   # no history features
#
# Without DATA: cmd/producer --source sim (fixed seed) -> events.jsonl + truth.csv ->
# cmd/trainset -> train.py -> models/default. The same seed gives a byte-identical model.txt.
# With DATA: a historical appointments CSV in the layout of docs/csv.md -> cmd/trainset -csv
# (bad rows counted by reason, listed in bad_rows.csv) -> train.py -> models/<model_id>.
#
# Environment (defaults in brackets): DATA, CONFIG (training config JSON: extras and their
# types, split, bands, ...; see docs/model.md), OUT [models/default, or models/<model_id> with
# DATA], PATIENTS [50000], DAYS [365], SEED [42] (simulator), PYTHON [the .venv that
# scripts/python.sh builds from training/requirements.txt], KEEP (a directory to keep the
# intermediate files in), HISTORY_RETENTION [26280h, must equal the consumer's], CSV_TIMEZONE
# [Europe/London] and CSV_DATE_ONLY_TIME [23:59] (how DATA's times are read; docs/csv.md),
# AS_OF [booking] (decision: rows as of the decision point, DECISION_LEAD [24h] before the
# start, for the decision-time model; its default OUT is models/decision and the simulator
# runs with --dna-since-booking, DNA_SINCE_BOOKING [1 with AS_OF=decision, else 0]).
#
# The new directory is assembled next to OUT and moved in at the end: a fresh OUT by one
# rename; an existing OUT (perhaps one a consumer is watching) file by file, model.txt before
# contract.json, each by rename, so a watcher never loads a mix (and would refuse one: the
# contract pins model.txt's SHA-256).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-}"
CONFIG="${CONFIG:-}"
OUT="${OUT:-}"
PATIENTS="${PATIENTS:-50000}"
DAYS="${DAYS:-365}"
SEED="${SEED:-42}"
HISTORY_RETENTION="${HISTORY_RETENTION:-26280h}"
AS_OF="${AS_OF:-booking}"
DECISION_LEAD="${DECISION_LEAD:-24h}"

log() { echo "build_model: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -z "$DATA" || -f "$DATA" ]] || die "DATA=$DATA: no such file"
[[ -z "$CONFIG" || -f "$CONFIG" ]] || die "CONFIG=$CONFIG: no such file"
[[ "$AS_OF" == booking || "$AS_OF" == decision ]] || die "AS_OF=$AS_OF: want booking or decision"
DNA_SINCE_BOOKING="${DNA_SINCE_BOOKING:-$([[ "$AS_OF" == decision ]] && echo 1 || echo 0)}"
if [[ -z "$DATA" && -z "$OUT" ]]; then
	if [[ "$AS_OF" == decision ]]; then OUT=models/decision; else OUT=models/default; fi
fi
ASOF_ARGS=(-as-of "$AS_OF")
[[ "$AS_OF" == booking ]] || ASOF_ARGS+=(-decision-lead "$DECISION_LEAD")

start=$SECONDS
PYTHON="${PYTHON:-$(scripts/python.sh)}"
want="$(sed -n 's/^lightgbm==//p' training/requirements.txt)"
have="$("$PYTHON" -c 'import lightgbm; print(lightgbm.__version__)')"
[[ "$have" == "$want" ]] || die "$PYTHON has LightGBM $have, training/requirements.txt pins $want: run scripts/python.sh"

if [[ -n "${KEEP:-}" ]]; then
	WORK="$KEEP"
	mkdir -p "$WORK"
else
	WORK="$(mktemp -d)"
fi
# Stage next to where the model goes, so moving it in is a rename on one filesystem.
PARENT="$(dirname "${OUT:-models/x}")"
mkdir -p "$PARENT"
STAGE="$(mktemp -d "$PARENT/.model-staging-XXXXXX")"
cleanup() { rm -rf "$STAGE"; [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"; }
trap cleanup EXIT

log "building the Go tools"
go build -o "$WORK/bin/" ./cmd/producer ./cmd/trainset ./cmd/modelcheck

EXTRAS=""
if [[ -n "$CONFIG" ]]; then
	EXTRAS="$("$PYTHON" -c '
import json, sys
try:
    cfg = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"build_model: ERROR: CONFIG={sys.argv[1]} is not JSON: {e}")
if not isinstance(cfg, dict):
    sys.exit(0)
# Extras used as features (key:type), then sensitive columns shown in the subgroup table of
# the card, read as categories (key:categorical) so text values get a code list.
keys = [f"{k}:{t}" for k, t in cfg.get("extras", {}).items()]
for k in cfg.get("sensitive", []) if isinstance(cfg.get("sensitive"), list) else []:
    if isinstance(k, str) and k not in cfg.get("extras", {}):
        keys.append(f"{k}:categorical")
print(",".join(keys))
' "$CONFIG")"
fi

TRAIN_ARGS=(--trainset "$WORK/trainset.csv" --out "$STAGE" --data-summary "$WORK/summary.json" --flip-check "$WORK/flip.json")
[[ -z "$CONFIG" ]] || TRAIN_ARGS+=(--config "$CONFIG")
if [[ -z "$DATA" ]]; then
	# Simulated patients only: this key pseudonymises made-up NHS numbers and protects nothing.
	export DNA_PSEUDONYM_SECRET=training-only-not-a-secret-000000
	SIM_ARGS=()
	[[ "$DNA_SINCE_BOOKING" == 0 ]] || SIM_ARGS+=(--dna-since-booking)
	log "simulating $PATIENTS patients over $DAYS days (seed $SEED${SIM_ARGS[*]:+, ${SIM_ARGS[*]}})"
	"$WORK/bin/producer" --source sim --seed "$SEED" --patients "$PATIENTS" --days "$DAYS" "${SIM_ARGS[@]}" \
		--out "$WORK/events.jsonl" --truth "$WORK/truth.csv"
	log "replaying $(wc -l <"$WORK/events.jsonl") events into a training set"
	"$WORK/bin/trainset" -in "$WORK/events.jsonl" -truth "$WORK/truth.csv" -out "$WORK/trainset.csv" \
		-extras "$EXTRAS" -summary "$WORK/summary.json" -history-retention "$HISTORY_RETENTION" -flip-check "$WORK/flip.json" "${ASOF_ARGS[@]}"
	TRAIN_ARGS+=(--provenance source=simulator --provenance "seed=$SEED" --provenance "patients=$PATIENTS" --provenance "days=$DAYS")
	[[ "$DNA_SINCE_BOOKING" == 0 ]] || TRAIN_ARGS+=(--provenance dna_since_booking=true)
else
	log "reading $DATA"
	"$WORK/bin/trainset" -csv "$DATA" -bad-rows "$STAGE/bad_rows.csv" -out "$WORK/trainset.csv" \
		-extras "$EXTRAS" -summary "$WORK/summary.json" -history-retention "$HISTORY_RETENTION" -flip-check "$WORK/flip.json" \
		-csv-timezone "${CSV_TIMEZONE:-Europe/London}" -csv-date-only-time "${CSV_DATE_ONLY_TIME:-23:59}" "${ASOF_ARGS[@]}"
	TRAIN_ARGS+=(--provenance source=csv --provenance "file=$(basename "$DATA")"
		--provenance "file_sha256=$(sha256sum "$DATA" | cut -d' ' -f1)")
fi
# The shipped model must prove parity on at least 10,000 rows (scoring's TestParity asks the
# same); a small trust's test window may hold fewer.
MIN_PARITY_ROWS=1
if [[ -n "$OUT" && ( "$(realpath -m "$OUT")" == "$ROOT/models/default" || "$(realpath -m "$OUT")" == "$ROOT/models/decision" ) ]]; then MIN_PARITY_ROWS=10000; fi
[[ -z "$CONFIG" ]] || TRAIN_ARGS+=(--provenance "config=$CONFIG")

log "training"
"$PYTHON" training/train.py "${TRAIN_ARGS[@]}" --modelcheck "$WORK/bin/modelcheck -min-rows $MIN_PARITY_ROWS"

MODEL_ID="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_id"])' "$STAGE/contract.json")"
OUT="${OUT:-models/$MODEL_ID}"
if [[ ! -e "$OUT" ]]; then
	chmod 755 "$STAGE"
	mv "$STAGE" "$OUT"
else
	[[ -d "$OUT" ]] || die "OUT=$OUT exists and is not a directory"
	# Everything but the two serving files first, then model.txt, then contract.json.
	for f in "$STAGE"/*; do
		case "$(basename "$f")" in model.txt | contract.json) ;; *) mv -f "$f" "$OUT/" ;; esac
	done
	mv -f "$STAGE/model.txt" "$OUT/model.txt"
	mv -f "$STAGE/contract.json" "$OUT/contract.json"
	# A file the new model did not write (bad_rows.csv of an earlier CSV build) is stale.
	[[ -n "$DATA" || ! -e "$OUT/bad_rows.csv" ]] || rm -f "$OUT/bad_rows.csv"
fi

"$PYTHON" - "$OUT" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1] + "/card.json"))
bayes = f", bayes_auc {c['bayes_auc']:.4f}" if "bayes_auc" in c else " (no bayes_auc: not simulator data)"
print(f"build_model: {c['model_id']}: auc {c['auc']:.4f} (95% CI {c['auc_ci95'][0]:.4f}-{c['auc_ci95'][1]:.4f}){bayes}, ece {c['ece']:.4f}, "
      f"parity_max_abs_diff {c['parity_max_abs_diff']:.3g}, calibrated {c['calibration']['applied']}; "
      f"rows train/validation/test {c['rows']['train']}/{c['rows']['validation']}/{c['rows']['test']} by appointment date; "
      f"{len(c['warnings'])} warning(s) on the card", file=sys.stderr)
for w in c["warnings"]:
    print(f"build_model: WARNING: {w}", file=sys.stderr)
EOF
if [[ -f "$OUT/bad_rows.csv" ]]; then
	log "$(($(wc -l <"$OUT/bad_rows.csv") - 1)) bad rows of $DATA were not used; each is listed with its line number and reason in $OUT/bad_rows.csv"
fi
log "done in $((SECONDS - start)) s: $OUT (card: $OUT/card.html, $OUT/card.md)"
