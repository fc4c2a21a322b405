"""No in-sample figure: calibration candidates are measured out of fold."""

import numpy as np

import calibrate
from metrics import ece

CFG = {"calibration": {"methods": ["platt", "isotonic"], "min_ece_gain": 0.001, "force": "isotonic"}}


def test_isotonic_measured_out_of_fold():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.5, 600)
    y = (rng.random(600) < p * 0.7).astype(int)
    # In-sample, isotonic regression fits its own bins perfectly: the old card's 0.0000.
    t = calibrate.fit_table("isotonic", p, y)
    assert ece(y, calibrate.apply_table(t, p)) < 0.01
    table, out, oof = calibrate.decide(CFG, p, y)
    iso = out["candidates"]["isotonic"]["validation_ece_crossfit"]
    assert out["applied"] and out["method"] == "isotonic" and "forced" in out["decision"]
    assert iso > 0.01 and iso == ece(y, oof)
    # The out-of-fold probabilities come from maps fitted on the other half only.
    half = len(p) // 2
    other = calibrate.fit_table("isotonic", p[half:], y[half:])
    assert np.array_equal(oof[:half], calibrate.apply_table(other, p[:half]))
