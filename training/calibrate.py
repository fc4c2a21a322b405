"""Calibration of the trees' probabilities, decided and fitted on the validation window.

Whatever is fitted is served as a piecewise-linear table (scoring.Calibration: numpy.interp of
x, y knots), and every number on the card is computed through that table, so the card
describes exactly what the Go scorer serves. No figure here is in-sample: each candidate is
cross-fitted on the two time-ordered halves of the validation window (fitted on one, measured
on the other), and the chosen map, fitted on the whole window, is measured on the test window.
"""

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from metrics import ece

EPS = 1e-6


def fit_table(method, p, y):
    """Fits a calibration map on (p, y) and returns it as (x, y) knots, or None if the fit
    is not a usable increasing map."""
    if method == "isotonic":
        ir = IsotonicRegression(y_min=EPS, y_max=1 - EPS, increasing=True, out_of_bounds="clip").fit(p, y)
        xs, ys = np.asarray(ir.X_thresholds_, float), np.asarray(ir.y_thresholds_, float)
        if len(xs) < 2:
            return None
        return xs, np.clip(ys, EPS, 1 - EPS)
    if method == "platt":
        z = logit(p).reshape(-1, 1)
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
        a, b = float(lr.coef_[0][0]), float(lr.intercept_[0])
        if not a > 0:
            return None
        xs = expit(np.linspace(-12, 12, 481))
        return xs, np.clip(expit(a * logit(xs) + b), EPS, 1 - EPS)
    raise ValueError(f"unknown calibration method {method!r}")


def apply_table(table, p):
    return p if table is None else np.interp(p, table[0], table[1])


def logit(p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def expit(z):
    return 1 / (1 + np.exp(-z))


def crossfit(method, p, y):
    """Out-of-fold probabilities: the map fitted on each time-ordered half of (p, y) applied
    to the other half. None if either fit is unusable."""
    half = len(p) // 2
    a, b = slice(0, half), slice(half, None)
    ta, tb = fit_table(method, p[a], y[a]), fit_table(method, p[b], y[b])
    if ta is None or tb is None:
        return None
    return np.concatenate([apply_table(tb, p[a]), apply_table(ta, p[b])])


def decide(cfg, p_valid, y_valid):
    """Cross-fits each method on the validation window and applies the best if it lowers the
    (out-of-fold) ECE by at least min_ece_gain, or as forced. Returns (table or None, the
    card's calibration section, the out-of-fold served probabilities on validation)."""
    c = cfg["calibration"]
    raw = ece(y_valid, p_valid)
    out = {"validation_ece_uncalibrated": raw, "min_ece_gain": c["min_ece_gain"], "candidates": {},
           "measured": "each candidate cross-fitted on the two time-ordered halves of the validation window (fitted on one, "
                       "measured on the other); the chosen map, fitted on the whole validation window, measured on the test window"}
    best, oof = None, {}
    for method in c["methods"]:
        q = crossfit(method, p_valid, y_valid)
        if q is None:
            out["candidates"][method] = {"usable": False}
            continue
        oof[method] = q
        e = ece(y_valid, q)
        out["candidates"][method] = {"validation_ece_crossfit": e, "validation_auc_crossfit": float(roc_auc_score(y_valid, q))}
        if best is None or e <= out["candidates"][best]["validation_ece_crossfit"] - c["min_ece_gain"]:
            best = method
    force = c.get("force")
    if force in ("isotonic", "platt"):
        method, why = force, f"forced by the config (calibration.force = {force!r})"
    elif force == "none":
        method, why = None, "turned off by the config (calibration.force = \"none\")"
    elif best is not None and raw - out["candidates"][best]["validation_ece_crossfit"] >= c["min_ece_gain"]:
        method = best
        why = (f"{best} lowers the validation ECE from {raw:.4f} to {out['candidates'][best]['validation_ece_crossfit']:.4f} "
               f"(cross-fitted on the two halves of the validation window), at least the required {c['min_ece_gain']}")
        others = [f"{m} {v['validation_ece_crossfit']:.4f}" for m, v in out["candidates"].items() if m != best and "validation_ece_crossfit" in v]
        if others:
            why += f"; other candidates: {', '.join(others)} (methods in order of preference {c['methods']}; a later one must win by {c['min_ece_gain']})"
    else:
        method = None
        if best is None:
            why = "no calibration method gave a usable map"
        else:
            why = (f"the uncalibrated model's validation ECE is {raw:.4f}; the best map ({best}, cross-fitted on the "
                   f"two halves of the validation window) gives {out['candidates'][best]['validation_ece_crossfit']:.4f}, "
                   f"not at least {c['min_ece_gain']} lower")
    out["best_candidate"] = best
    out["applied"] = method is not None
    out["method"] = method
    out["decision"] = why
    table = fit_table(method, p_valid, y_valid) if method else None
    if method and table is None:
        raise ValueError(f"calibration method {method} does not give a usable increasing map on the validation window")
    if method is None:
        valid_oof = p_valid
    else:
        valid_oof = oof.get(method)
        if valid_oof is None:
            valid_oof = crossfit(method, p_valid, y_valid)
    return table, out, valid_oof
