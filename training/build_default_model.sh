#!/usr/bin/env bash
# Rebuilds models/default from the simulator; the same as `make model` (see build_model.sh).
exec env -u DATA -u CONFIG -u AS_OF "$(dirname "${BASH_SOURCE[0]}")/build_model.sh" "$@"
