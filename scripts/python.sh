#!/usr/bin/env bash
# Creates .venv with the training side's pinned requirements, for the tests
# that run Python (training, parity against LightGBM's own predictions).
# Reinstalls only when training/requirements.txt changes.
#
#   scripts/python.sh          prints the venv's python path on success
#
# Environment: PYTHON3 (interpreter that creates the venv, default python3),
# REQUIREMENTS (default training/requirements.txt), VENV (default .venv; the benchmark's
# Python peer uses .venv-peer with bench/peer/requirements.txt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
REQ="${REQUIREMENTS:-$ROOT/training/requirements.txt}"
STAMP="$VENV/.requirements.sha256"

log() { echo "python.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -f "$REQ" ]] || die "$REQ not found"
command -v "${PYTHON3:-python3}" >/dev/null || die "${PYTHON3:-python3} not found"

# The interpreter's version is part of the hash: a venv built on another Python must be rebuilt.
want="$( (cat "$REQ"; "$VENV/bin/python" -V 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
	echo "$VENV/bin/python"
	exit 0
fi

start=$SECONDS
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
	rm -rf "$VENV"
	log "creating $VENV"
	"${PYTHON3:-python3}" -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
rm -f "$STAMP"
pip_log="$VENV/pip.log"
log "installing $REQ"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ" >"$pip_log" 2>&1; then
	cat "$pip_log" >&2
	die "pip install -r $REQ failed (log above, also in $pip_log)"
fi
# Recompute: the venv's interpreter now exists.
(cat "$REQ"; "$VENV/bin/python" -V) | sha256sum | cut -d' ' -f1 >"$STAMP"
log "installed in $((SECONDS - start))s"
echo "$VENV/bin/python"
