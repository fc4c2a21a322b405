"""The leakage guard: training stops when a feature looks like it knows the outcome.

Three checks, all listed on the card with their numbers:

* single-feature AUC: each feature alone, as a lookup table of the DNA rate per value (per
  category; per quantile bin for numbers with many values; missing as a value of its own)
  learnt on the training window, scores the validation window. A booking-time fact rarely
  separates DNAs from attendances on its own (lead time and prior DNAs, the strongest, reach
  about 0.6-0.7); AUC >= max_single_feature_auc (0.9) almost always means the column was
  filled in from the outcome or from the patient's later history (e.g. a no-show count over
  the whole extract).
* the flip check (cmd/trainset -flip-check): the input replayed again with every outcome
  recorded after the middle booking flipped; no feature of a booking made before it may
  change. It proves the Go feature code and the way extras are read are point-in-time. An
  extra column is copied from the file as it is, so the flip cannot change it even if it was
  computed from later outcomes: for extras the next check is the guard.
* what each extra adds: a quick model with every feature and one without the extra, both
  learnt on the training window and scored on the validation window. A column built from the
  whole extract (a per-patient no-show count) is weak alone, because it is the same for all a
  patient's bookings, but together with the booking-time history (prior DNAs) it tells which
  of them were missed: on the hand-made test extract it adds about 0.2 to the AUC, while a
  genuine booking-time fact adds little over the history the Go features already hold.
  Training stops when an extra adds max_extra_auc_gain (0.1) or more.

Any finding stops training unless the config's allow_leakage is true or lists the feature.
"""

import lightgbm as lgb

import math

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

MAX_BINS = 20
PRIOR_ROWS = 20  # shrink each value's DNA rate towards the overall rate by this many rows


def lookup_auc(train_x, train_y, valid_x, valid_y, categorical):
    """AUC on validation of the per-value DNA rate learnt on training (see module doc)."""
    tx, vx = pd.Series(train_x).astype(float), pd.Series(valid_x).astype(float)
    base = float(np.mean(train_y))
    if not categorical and tx.nunique() > 2 * MAX_BINS:
        edges = np.unique(np.nanquantile(tx, np.linspace(0, 1, MAX_BINS + 1)[1:-1]))
        tk = pd.Series(np.searchsorted(edges, tx, side="right"), dtype=float).where(tx.notna().to_numpy())
        vk = pd.Series(np.searchsorted(edges, vx, side="right"), dtype=float).where(vx.notna().to_numpy())
    else:
        tk, vk = tx.reset_index(drop=True), vx.reset_index(drop=True)
    tk, vk = tk.fillna(-math.inf), vk.fillna(-math.inf)
    g = pd.DataFrame({"k": tk.to_numpy(), "y": np.asarray(train_y)}).groupby("k")["y"].agg(["sum", "count"])
    rate = (g["sum"] + PRIOR_ROWS * base) / (g["count"] + PRIOR_ROWS)
    score = vk.map(rate).fillna(base).to_numpy()
    vy = np.asarray(valid_y)
    if vy.min() == vy.max():
        return None
    return float(roc_auc_score(vy, score))


def quick_auc(cfg, train, valid, features, categorical, label):
    """Validation AUC of a quick LightGBM model on features (the config's parameters, a
    larger learning rate, early stopping)."""
    params = dict(cfg["params"], learning_rate=0.1, verbose=-1)
    cats = [c for c in categorical if c in features]
    d = lgb.Dataset(train[features], train[label], categorical_feature=cats, free_raw_data=False)
    v = lgb.Dataset(valid[features], valid[label], reference=d)
    b = lgb.train(params, d, num_boost_round=500, valid_sets=[v], callbacks=[lgb.early_stopping(20, first_metric_only=True, verbose=False)])
    return float(roc_auc_score(valid[label], b.predict(valid[features], num_iteration=b.best_iteration)))


def extra_gains(cfg, train, valid, features, categorical, label, prefix="extra."):
    """{extra: validation AUC with every feature minus AUC without that extra}, and the AUC
    with every feature; ({}, None) when there are no extras."""
    extras = [f for f in features if f.startswith(prefix)]
    if not extras:
        return {}, None
    full = quick_auc(cfg, train, valid, features, categorical, label)
    return {e: full - quick_auc(cfg, train, valid, [f for f in features if f != e], categorical, label) for e in extras}, full


def allowed(cfg, feature):
    a = cfg.get("allow_leakage", False)
    return a is True or (isinstance(a, list) and feature in a)


def check(cfg, train, valid, features, categorical, label, flip_report):
    """Runs both checks. Returns (the card's leakage section, problems that stop training)."""
    limit = cfg["leakage"]["max_single_feature_auc"]
    singles = {}
    for f in features:
        singles[f] = lookup_auc(train[f].to_numpy(), train[label].to_numpy(), valid[f].to_numpy(), valid[label].to_numpy(), f in categorical)
    problems, allowed_findings = [], []
    for f, a in sorted(singles.items(), key=lambda kv: -(kv[1] or 0)):
        if a is not None and a >= limit:
            msg = (f"{f} alone reaches AUC {a:.3f} on the validation window (limit {limit}): a booking-time fact rarely does; "
                   "it was probably filled in from the outcome or from the patient's later history")
            (allowed_findings if allowed(cfg, f) else problems).append(msg)
    gain_limit = cfg["leakage"]["max_extra_auc_gain"]
    gains, full = extra_gains(cfg, train, valid, features, categorical, label)
    for f, g in sorted(gains.items(), key=lambda kv: -kv[1]):
        if g >= gain_limit:
            msg = (f"{f} adds {g:.3f} to the validation AUC of a model with every other feature (limit {gain_limit}): a "
                   "booking-time fact adds little to the booking history; a column built from the whole extract "
                   "(e.g. a per-patient no-show count) adds a lot")
            (allowed_findings if allowed(cfg, f) else problems).append(msg)
    out = {
        "single_feature_auc": {"limit": limit, "method": "per-value DNA rate learnt on the training window, AUC on the validation window",
                               "auc": singles},
        "extra_auc_gain": {"limit": gain_limit, "auc_with_every_feature": full, "gain": gains,
                           "method": "validation AUC of a quick model with every feature minus that without the extra"},
        "allow_leakage": cfg.get("allow_leakage", False),
    }
    if flip_report is None:
        out["flip_check"] = {"run": False, "note": "no -flip-check report was given to train.py (make model always runs it)"}
    else:
        before = {c: n for c, n in flip_report["changed_at_or_before_cut_off"].items() if n}
        changed_after = sum(flip_report["changed_after_cut_off"].values())
        out["flip_check"] = {
            "run": True, "cut_off": flip_report["cut_off"], "outcomes_flipped": flip_report["outcomes_flipped"],
            "rows_compared": flip_report["rows_at_or_before_cut_off"], "later_rows": flip_report["rows_after_cut_off"],
            "columns": flip_report["columns"], "changed_before": before, "values_changed_after": changed_after,
            "ok": flip_report["ok"],
        }
        for c, n in before.items():
            if c not in features:
                continue
            msg = (f"{c} changed in {n} rows booked before {flip_report['cut_off']} when the outcomes recorded after it were flipped: "
                   "it sees the future")
            (allowed_findings if allowed(cfg, c) else problems).append(msg)
        if not flip_report["ok"] and not before:
            out["flip_check"]["note"] = ("no later row changed either, so the check proved nothing on this data "
                                         f"({flip_report['outcomes_flipped']} outcomes flipped)")
    out["findings_allowed"] = allowed_findings
    out["passed"] = not problems
    return out, problems
