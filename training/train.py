#!/usr/bin/env python3
"""Train the DNA (did not attend) model from a training set written by cmd/trainset.

Reads the trainset CSV (features computed by the Go feature code, one row per scored booking,
labelled with its eventual outcome), splits it by event_time into train / validation / test,
trains a LightGBM binary model with early stopping on validation, decides on validation
whether a calibration map improves calibration, and writes a model directory the Go scorer
loads (scoring.Load):

  model.txt      the LightGBM text model (Booster.save_model)
  contract.json  model_id, features in model order with types, risk bands, model_sha256,
                 the calibration map when one is applied
  parity.csv     held-out rows and the served probability Python computes for them
  card.json      the model card as data: test AUC, ECE, Bayes AUC (simulator only), Go/LightGBM
                 parity (measured by cmd/modelcheck), windows, row counts, calibration decision
  card.md        the model card for people, with roc.png, calibration.png, importance.png and
                 contacts.png

Usage:
  train.py --trainset trainset.csv --out DIR [--config config.json]
           [--data-summary summary.json] [--provenance key=value ...] [--modelcheck CMD]

The config file (JSON, all keys optional) overrides DEFAULTS below; see docs/model.md.
Training is deterministic for a given trainset, config and LightGBM version.
"""

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

import card as cardlib

ID_COLUMNS = ["appointment_id", "booking_version", "event_time"]
LABEL = "label"
TRUTH = "p_dna"
EXTRA_PREFIX = "extra."

DEFAULTS = {
    # Fractions of rows, in event_time order, for train / validation / test.
    "split": [0.70, 0.15, 0.15],
    # Features the model treats as categories (integer codes, never pandas categories: the Go
    # scorer feeds the raw codes).
    "categorical": ["specialty"],
    # Features to drop from the trainset columns (default: use them all).
    "exclude": [],
    # Booking extras (CSV extra columns, booking.extra keys) to use as features, with their
    # type: {"distance_km": "numeric", "clinic_code": "categorical"}. A categorical extra is
    # carried as a whole-number code (0 .. 2^31-2); see docs/model.md.
    "extras": {},
    "params": {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 200,
        "lambda_l2": 1.0,
        "cat_smooth": 10,
        "max_cat_to_onehot": 4,
        "metric": ["binary_logloss", "auc"],
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "seed": 42,
        "verbose": -1,
    },
    "num_boost_round": 2000,
    "early_stopping_rounds": 50,
    # Calibration is fitted on the validation window and applied only if its cross-fitted
    # ECE there (fit on one half, measured on the other, both ways) beats the uncalibrated
    # model's by at least min_ece_gain. methods is in order of preference: a later method is
    # chosen over an earlier one only if it beats it by min_ece_gain too. Platt scaling comes
    # first because it keeps the trees' order of bookings (no ties, so AUC and band shares
    # stay those of the trees) and cannot overfit the tails; isotonic regression has flat
    # steps and, fitted on a few rows at the top, can serve probabilities near 0 or 1.
    # force: "isotonic", "platt" or "none" overrides the decision (the card says so).
    "calibration": {"methods": ["platt", "isotonic"], "min_ece_gain": 0.001, "force": None},
    # Risk bands from validation scores: medium = at or above the training base rate,
    # high = top high_fraction of validation scores, very_high = top very_high_fraction.
    "bands": {"high_fraction": 0.10, "very_high_fraction": 0.03},
    # Share of DNAs among those contacted that an extra reminder prevents (for the
    # contacts-per-prevented-DNA curve; Nelson et al. 2019 framing).
    "reminder_efficacy": 0.30,
    # Parity rows: held-out test rows plus perturbed copies that exercise missing values and
    # unseen / missing categories.
    "parity_rows": 12000,
    "parity_perturbed_rows": 2000,
    # Fewest rows, and fewest of each outcome, in each part of the split: fewer cannot early
    # stop, choose bands or measure AUC and calibration meaningfully.
    "minimums": {"train_rows": 1000, "validation_rows": 200, "test_rows": 200, "each_outcome": 20},
}

BINS = 10


def log(msg):
    print(f"train.py: {msg}", file=sys.stderr, flush=True)


def die(msg):
    sys.exit(f"train.py: ERROR: {msg}")


def load_config(path):
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        with open(path) as f:
            try:
                user = json.load(f)
            except json.JSONDecodeError as e:
                die(f"{path}: not JSON: {e}")
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            die(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        for k, v in user.items():
            if isinstance(DEFAULTS[k], dict) and k != "extras":
                if not isinstance(v, dict):
                    die(f"{path}: {k} must be an object")
                cfg[k].update(v)
            else:
                cfg[k] = v
    split = cfg["split"]
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-9:
        die(f"split {split}: want three positive fractions summing to 1")
    bad = {k: t for k, t in cfg["extras"].items() if not re.fullmatch(r"[a-z0-9_]{1,64}", k) or t not in ("numeric", "categorical")}
    if bad:
        die(f"extras {bad}: want lower-case names (a-z 0-9 _, as csvimport names CSV columns) mapped to \"numeric\" or \"categorical\"")
    force = cfg["calibration"].get("force")
    if force not in (None, "none", "isotonic", "platt"):
        die(f"calibration.force {force!r}: want null, \"none\", \"isotonic\" or \"platt\"")
    if not 0 < cfg["reminder_efficacy"] <= 1:
        die(f"reminder_efficacy {cfg['reminder_efficacy']}: want a share in (0, 1]")
    return cfg


def read_trainset(path):
    """Reads the trainset by position: cmd/trainset writes the three ID columns, the
    feature columns, then label and p_dna. booking_version is both an ID column and a
    feature, so the header names it twice; the ID columns are renamed with a leading "_"."""
    with open(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
    if header[:3] != ID_COLUMNS or header[-2:] != [LABEL, TRUTH]:
        die(f"{path}: header {header[:3]}...{header[-2:]}, want {ID_COLUMNS}...{[LABEL, TRUTH]}; is it cmd/trainset output?")
    names = ["_" + c for c in ID_COLUMNS] + header[3:]
    if len(set(names)) != len(names):
        die(f"{path}: duplicate feature columns in {header[3:-2]}")
    df = pd.read_csv(path, header=0, names=names, dtype={"_appointment_id": str}, keep_default_na=False, na_values=[""])
    df["_event_time"] = pd.to_datetime(df["_event_time"], utc=True, format="ISO8601")
    if not df["_event_time"].is_monotonic_increasing:
        die(f"{path}: rows are not in event_time order")
    return df, header[3:-2]


def choose_features(cfg, df, columns):
    """The model's features: the trainset's standard columns minus exclude, plus the extras the
    config asks for (cmd/trainset -extras must have written them)."""
    extra_cols = [c for c in columns if c.startswith(EXTRA_PREFIX)]
    wanted = [EXTRA_PREFIX + k for k in cfg["extras"]]
    missing = [c for c in wanted if c not in columns]
    if missing:
        die(f"config extras {[c[len(EXTRA_PREFIX):] for c in missing]} are not in the training set "
            f"(it has {[c[len(EXTRA_PREFIX):] for c in extra_cols] or 'no extras'}): run cmd/trainset with -extras listing them")
    unknown_excl = [c for c in cfg["exclude"] if c not in columns]
    if unknown_excl:
        die(f"exclude names {unknown_excl}, which are not training-set columns {columns}")
    features = [c for c in columns if c not in cfg["exclude"] and (not c.startswith(EXTRA_PREFIX) or c in wanted)]
    categorical = [c for c in cfg["categorical"] if c in features]
    categorical += [EXTRA_PREFIX + k for k, t in cfg["extras"].items() if t == "categorical"]
    for c in categorical:
        if not c.startswith(EXTRA_PREFIX):
            continue
        x = df[c].dropna()
        bad = x[(x < 0) | (x >= 2**31 - 1) | (x != np.floor(x))]
        if len(bad):
            die(f"categorical extra {c[len(EXTRA_PREFIX):]!r} has {len(bad)} values that are not whole-number codes 0..2147483646 "
                f"(e.g. {bad.iloc[0]!r}); encode the categories as such codes, or declare it numeric")
    return features, categorical


def check_minimums(cfg, parts):
    m = cfg["minimums"]
    problems = []
    for name, part in parts.items():
        need = m[f"{name}_rows"]
        dna = int(part[LABEL].sum())
        if len(part) < need or min(dna, len(part) - dna) < m["each_outcome"]:
            problems.append(f"{name} has {len(part)} rows ({dna} did not attend, {len(part) - dna} attended), need {need} rows and {m['each_outcome']} of each outcome")
    if problems:
        total = sum(len(p) for p in parts.values())
        die(f"too little data to train and evaluate a model: {total} labelled rows split by time {cfg['split']}: " + "; ".join(problems)
            + ". Use a longer history (a year or more of appointments is typical), or lower \"minimums\" in the config knowing the card will be noisy.")


def ece(y, p, bins=BINS):
    """Expected calibration error over equal-width probability bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(total)


def metrics(y, p):
    return {
        "auc": float(roc_auc_score(y, p)),
        "ece": ece(y, p),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "mean_prediction": float(p.mean()),
        "dna_rate": float(y.mean()),
    }


def window(part):
    return {"from": iso(part["_event_time"].iloc[0]), "to": iso(part["_event_time"].iloc[-1])}


def iso(ts):
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt(x):
    """Full-precision float for CSV: repr round-trips exactly; empty means missing."""
    return "" if math.isnan(x) else repr(float(x))


# --- calibration ---------------------------------------------------------------------------
# Whatever is fitted is served as a piecewise-linear table (scoring.Calibration: numpy.interp
# of x, y knots), and every number below is computed through that table, so the card
# describes exactly what the Go scorer serves.

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
    die(f"unknown calibration method {method!r}")


def apply_table(table, p):
    return p if table is None else np.interp(p, table[0], table[1])


def logit(p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def expit(z):
    return 1 / (1 + np.exp(-z))


def decide_calibration(cfg, p_valid, y_valid):
    """Cross-fits each method on the two time-ordered halves of the validation window and
    applies the best if it lowers ECE by at least min_ece_gain (or as forced)."""
    c = cfg["calibration"]
    half = len(p_valid) // 2
    a, b = slice(0, half), slice(half, None)
    raw = ece(y_valid, p_valid)
    out = {"validation_ece_uncalibrated": raw, "min_ece_gain": c["min_ece_gain"], "candidates": {}}
    best = None
    for method in c["methods"]:
        ta, tb = fit_table(method, p_valid[a], y_valid[a]), fit_table(method, p_valid[b], y_valid[b])
        if ta is None or tb is None:
            out["candidates"][method] = {"usable": False}
            continue
        oof = np.concatenate([apply_table(tb, p_valid[a]), apply_table(ta, p_valid[b])])
        e = ece(y_valid, oof)
        out["candidates"][method] = {"validation_ece_crossfit": e, "validation_auc_crossfit": float(roc_auc_score(y_valid, oof))}
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
        die(f"calibration method {method} does not give a usable increasing map on the validation window")
    return table, out


def bands(cfg, base_rate, valid_scores):
    b = cfg["bands"]
    high = float(np.quantile(valid_scores, 1 - b["high_fraction"]))
    very_high = float(np.quantile(valid_scores, 1 - b["very_high_fraction"]))
    out = [
        {"name": "low", "min_probability": 0},
        {"name": "medium", "min_probability": round(float(base_rate), 6)},
        {"name": "high", "min_probability": round(high, 6)},
        {"name": "very_high", "min_probability": round(very_high, 6)},
    ]
    for lo, hi in zip(out, out[1:]):
        if not hi["min_probability"] > lo["min_probability"]:
            die(f"risk bands not ascending ({out}); adjust bands in the config")
    return out


def band_rates(bands_, y, p):
    """Share of test bookings and their DNA rate per band."""
    out = {}
    edges = [b["min_probability"] for b in bands_] + [math.inf]
    for b, lo, hi in zip(bands_, edges, edges[1:]):
        m = (p >= lo) & (p < hi)
        out[b["name"]] = {"share": float(m.mean()), "dna_rate": float(y[m].mean()) if m.any() else None}
    return out


def contacts_curve(y, score, efficacy):
    """For each number k of bookings contacted, highest score first: (share contacted,
    contacts per prevented DNA, share of all DNAs among those contacted)."""
    order = np.argsort(-score, kind="stable")
    dna = np.cumsum(y[order])
    k = np.arange(1, len(y) + 1)
    with np.errstate(divide="ignore"):
        per = np.where(dna > 0, k / (efficacy * dna), np.inf)
    return k / len(y), per, dna / max(1, y.sum())


def contacts_table(y, p, efficacy, shares=(0.03, 0.05, 0.10, 0.20, 0.30, 0.50, 1.0)):
    share, per, reached = contacts_curve(y, p, efficacy)
    rows = []
    for s in shares:
        i = max(0, int(math.ceil(s * len(y))) - 1)
        dnas = float(reached[i] * y.sum())
        rows.append({
            "share_contacted": s,
            "contacts": int(i + 1),
            "dnas_among_contacted": int(round(dnas)),
            "share_of_dnas_reached": float(reached[i]),
            "prevented_dnas": efficacy * dnas,
            "contacts_per_prevented_dna": float(per[i]),
        })
    return rows


def parity_rows(cfg, test, features, categorical, rng):
    n = min(cfg["parity_rows"], len(test))
    base = test[features].iloc[np.sort(rng.choice(len(test), n, replace=False))].copy()
    base.insert(0, "kind", "test")
    k = min(cfg["parity_perturbed_rows"], len(test))
    pert = test[features].iloc[rng.choice(len(test), k, replace=False)].copy()
    # Knock out a random third of the values, then give the categoricals missing, negative
    # and never-seen codes, so every missing-value branch in the trees is exercised.
    mask = rng.random(pert.shape) < 1 / 3
    pert = pert.mask(mask)
    for c in categorical:
        pert[c] = rng.choice([np.nan, -1.0, 999.0, 0.0, 123456.0], size=k)
    pert.insert(0, "kind", "perturbed")
    return pd.concat([base, pert], ignore_index=True)


def feature_entry(c, categorical, text_codes):
    """A contract feature. A categorical extra that held text carries its code list (learned by
    cmd/trainset, in its -summary as "categories"): the scorer maps the same text to the same
    code, and unlisted text to missing (docs/csv.md)."""
    f = {"name": c, "type": "categorical" if c in categorical else "numeric"}
    if c in categorical and c.startswith(EXTRA_PREFIX) and c[len(EXTRA_PREFIX):] in text_codes:
        f["categories"] = text_codes[c[len(EXTRA_PREFIX):]]
    return f


def dump_contract(contract):
    """contract.json, indented, with the calibration knots one array per line."""
    c = dict(contract)
    cal = c.get("calibration")
    if cal:
        c["calibration"] = dict(cal, x="@X@", y="@Y@")
    text = json.dumps(c, indent=2) + "\n"
    if cal:
        # json.dumps writes floats with repr: they read back exactly.
        text = text.replace('"@X@"', json.dumps(cal["x"])).replace('"@Y@"', json.dumps(cal["y"]))
    return text


def run_modelcheck(cmd, out):
    """Runs the Go check (cmd/modelcheck) on the written directory: the model must load as the
    consumer loads it and match parity.csv within 1e-9."""
    argv = shlex.split(cmd) + [out]
    log(f"checking Go parity: {' '.join(argv)}")
    try:
        res = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError as e:
        die(f"cannot run the Go model check {argv[0]!r}: {e}. Run from the repository root with Go installed, or pass --modelcheck")
    sys.stderr.write(res.stderr)
    try:
        rep = json.loads(res.stdout)
    except json.JSONDecodeError:
        die(f"Go model check failed (exit {res.returncode}): the model directory {out} does not load in the scorer")
    if res.returncode != 0 or not rep.get("ok"):
        die(f"Go/LightGBM parity failed: {json.dumps(rep)}")
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainset", required=True, help="CSV written by cmd/trainset")
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--config", help="JSON overriding the defaults (see docs/model.md)")
    ap.add_argument("--data-summary", help="cmd/trainset -summary JSON, copied into the card")
    ap.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE", help="facts about the data for the card (repeatable)")
    ap.add_argument("--modelcheck", default=os.environ.get("MODELCHECK", "go run ./cmd/modelcheck"),
                    help="command that checks a model directory in Go and prints its parity report (default: %(default)s; env MODELCHECK)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    provenance = {}
    for kv in args.provenance:
        k, sep, v = kv.partition("=")
        if not sep:
            die(f"--provenance {kv!r}: want KEY=VALUE")
        provenance[k] = v
    data_summary = None
    if args.data_summary:
        with open(args.data_summary) as f:
            data_summary = json.load(f)

    df, columns = read_trainset(args.trainset)
    features, categorical = choose_features(cfg, df, columns)
    for c in features:
        df[c] = df[c].astype("float64")
    n = len(df)
    a, b = int(n * cfg["split"][0]), int(n * (cfg["split"][0] + cfg["split"][1]))
    train, valid, test = df.iloc[:a], df.iloc[a:b], df.iloc[b:]
    check_minimums(cfg, {"train": train, "validation": valid, "test": test})
    log(f"{n} rows: train {len(train)}, validation {len(valid)}, test {len(test)}; features {features}; categorical {categorical}")

    params = dict(cfg["params"])
    dtrain = lgb.Dataset(train[features], train[LABEL], categorical_feature=categorical, free_raw_data=False)
    dvalid = lgb.Dataset(valid[features], valid[LABEL], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg["num_boost_round"],
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(cfg["early_stopping_rounds"], first_metric_only=True, verbose=False)],
    )
    log(f"best iteration {booster.best_iteration}")

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.txt")
    booster.save_model(model_path, num_iteration=booster.best_iteration)
    # Everything below uses the model as saved, so the parity rows and the card describe
    # exactly the file the Go scorer loads.
    model = lgb.Booster(model_file=model_path)
    with open(model_path, "rb") as f:
        model_hash = hashlib.sha256(f.read()).hexdigest()

    now = dt.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", dt.datetime.now(dt.timezone.utc).timestamp())), dt.timezone.utc)
    y_valid, y_test = valid[LABEL].to_numpy(), test[LABEL].to_numpy()
    raw_valid = model.predict(valid[features])
    raw_test = model.predict(test[features])
    table, calibration = decide_calibration(cfg, raw_valid, y_valid)
    # The served probabilities: the trees, then the calibration table if applied.
    p_valid, p_test = apply_table(table, raw_valid), apply_table(table, raw_test)
    if table is None:
        # For the record: what the best candidate would have done on the test window.
        best = calibration["best_candidate"]
        if best:
            t = fit_table(best, raw_valid, y_valid)
            if t is not None:
                calibration["test_ece_if_" + best + "_applied"] = ece(y_test, apply_table(t, raw_test))
    else:
        calibration["test_ece_uncalibrated"] = ece(y_test, raw_test)
    if table is not None:
        log(f"calibration: {calibration['decision']}")
    else:
        log(f"calibration {calibration['decision']}")
    base_rate = float(train[LABEL].mean())

    contract = {
        "model_id": None,  # below: it names what is served
        "features": [feature_entry(c, categorical, (data_summary or {}).get("categories") or {}) for c in features],
        "risk_bands": bands(cfg, base_rate, p_valid),
        "trained_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_rows": len(train),
        "training_window": window(train),
        "label": "did_not_attend",
        "lightgbm_version": lgb.__version__,
        "model_sha256": model_hash,
    }
    if table is not None:
        contract["calibration"] = {"method": calibration["method"], "x": [float(x) for x in table[0]], "y": [float(y) for y in table[1]]}
    # The id's hash covers everything that decides a risk event's probability and band: the
    # trees, the features, the bands and the calibration map. Same trees, new calibration or
    # bands: a new id, so risk events always say which scoring produced them.
    served = json.dumps({k: contract.get(k) for k in ("features", "risk_bands", "calibration")}, sort_keys=True)
    model_id = f"dna-gbm-{now:%Y%m%d}-{hashlib.sha256((model_hash + served).encode()).hexdigest()[:8]}"
    contract["model_id"] = model_id
    with open(os.path.join(args.out, "contract.json"), "w") as f:
        f.write(dump_contract(contract))
    if table is not None:
        # The served table is the one read back from contract.json (json round-trips floats).
        with open(os.path.join(args.out, "contract.json")) as f:
            cal = json.load(f)["calibration"]
        table = (np.array(cal["x"]), np.array(cal["y"]))
        p_valid, p_test = apply_table(table, raw_valid), apply_table(table, raw_test)

    rng = np.random.default_rng(params.get("seed", 0))
    parity = parity_rows(cfg, test, features, categorical, rng)
    parity["probability"] = apply_table(table, model.predict(parity[features]))
    with open(os.path.join(args.out, "parity.csv"), "w") as f:
        f.write(",".join(["kind"] + features + ["probability"]) + "\n")
        for row in parity.itertuples(index=False):
            f.write(row[0] + "," + ",".join(fmt(x) for x in row[1:]) + "\n")

    check = run_modelcheck(args.modelcheck, args.out)

    efficacy = cfg["reminder_efficacy"]
    test_metrics = metrics(y_test, p_test)
    has_truth = TRUTH in test.columns and test[TRUTH].notna().all()
    importance = sorted(zip(features, model.feature_importance("gain")), key=lambda kv: -kv[1])
    card = {
        "model_id": model_id,
        "trained_at": contract["trained_at"],
        "lightgbm_version": lgb.__version__,
        # Headline figures: the served model on the test window.
        "auc": test_metrics["auc"],
        "ece": test_metrics["ece"],
        "ece_bins": BINS,
    }
    if has_truth:
        card["bayes_auc"] = float(roc_auc_score(y_test, test[TRUTH].to_numpy()))
    else:
        card["bayes_auc_note"] = ("the data did not come from the simulator, so the true probability of each DNA, and with "
                                  "it the best AUC any model could reach on these rows, is unknown")
    card.update({
        "parity_max_abs_diff": check["max_abs_diff"],
        "parity": {k: check[k] for k in ("rows", "rows_with_missing", "missing_categories", "distinct_categories",
                                         "max_abs_diff_raw", "max_abs_diff_encoded", "max_abs_diff", "max_diff_allowed", "calibrated")},
        "training_window": contract["training_window"],
        "windows": {"train": window(train), "validation": window(valid), "test": window(test)},
        "rows": {"train": len(train), "validation": len(valid), "test": len(test), "parity": len(parity)},
        "best_iteration": booster.best_iteration,
        "features": contract["features"],
        "base_rate_train": base_rate,
        "test": test_metrics,
        "validation": metrics(y_valid, p_valid),
        "calibration": calibration,
        "risk_bands": contract["risk_bands"],
        "band_rates_test": band_rates(contract["risk_bands"], y_test, p_test),
        "reminder_efficacy": efficacy,
        "contacts_per_prevented_dna_test": contacts_table(y_test, p_test, efficacy),
        "feature_importance_gain": {k: round(float(v), 3) for k, v in importance},
        "data": {"provenance": provenance, "trainset": data_summary},
        "model_sha256": model_hash,
        "config": cfg,
    })
    if has_truth:
        card["test"]["bayes_auc"] = card["bayes_auc"]
        card["contacts_per_prevented_dna_test_bayes"] = contacts_table(y_test, test[TRUTH].to_numpy(), efficacy)
    card["plots"] = cardlib.plots(args.out, card, y_test, p_test, test[TRUTH].to_numpy() if has_truth else None, importance, efficacy)
    with open(os.path.join(args.out, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    cardlib.markdown(args.out, card)
    bayes = f"{card['bayes_auc']:.4f}" if "bayes_auc" in card else "n/a (not simulator data)"
    log(f"{model_id}: test AUC {card['auc']:.4f}, ECE {card['ece']:.4f}, Bayes AUC {bayes}, "
        f"parity {card['parity_max_abs_diff']:.3g}, calibrated {calibration['applied']}")


if __name__ == "__main__":
    main()
