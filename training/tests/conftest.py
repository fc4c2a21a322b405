"""Shared set-up for the training tests (make test runs them with the project .venv).

The end-to-end tests drive training/build_model.sh, which builds the Go tools (cmd/producer,
cmd/trainset, cmd/modelcheck) itself; Go must be on PATH. Outside CI a missing tool skips
loudly; under CI=true it fails.
"""

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "training"))
sys.path.insert(0, HERE)


def need(tool):
    if shutil.which(tool) is None:
        msg = f"{tool} is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (required under CI=true)")
        pytest.skip("SKIPPING: " + msg)


def run_script(script, blank, **env):
    """Runs training/<script> from the repository root with this Python and env; the
    variables in blank are set empty unless env gives them."""
    need("go")
    full = dict(os.environ, PYTHON=sys.executable, **{k: str(v) for k, v in env.items()})
    for k in blank:
        full.setdefault(k, "")
    return subprocess.run([os.path.join(ROOT, "training", script)], cwd=ROOT, env=full, capture_output=True, text=True)


def build_model(tmp_path, name, **env):
    """Runs training/build_model.sh with env (DATA, CONFIG, PATIENTS, ...), OUT and KEEP under
    tmp_path. Returns (completed process, out dir, work dir)."""
    out, work = tmp_path / name, tmp_path / (name + "-work")
    res = run_script("build_model.sh", ("DATA", "CONFIG", "AS_OF", "DECISION_LEAD"), OUT=out, KEEP=work, **env)
    return res, out, work


def evaluate(tmp_path, name, **env):
    """Runs training/evaluate.sh (make evaluate) with env (MODEL, DATA, CONFIG, FROM, TO) and
    OUT under tmp_path. Returns (completed process, out dir)."""
    out = tmp_path / name
    return run_script("evaluate.sh", ("MODEL", "DATA", "CONFIG", "FROM", "TO", "AS_OF", "DECISION_LEAD", "BOOKING_MODEL"), OUT=out, **env), out
