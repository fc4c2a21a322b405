#!/usr/bin/env python3
"""Train the DNA (did not attend) model from a training set written by cmd/trainset.

Reads the trainset CSV (features computed by the Go feature code, one row per scored booking,
labelled with its eventual outcome), splits it by event_time into train / validation / test,
trains a LightGBM binary model with early stopping on validation, and writes a model
directory the Go scorer loads (scoring.Load):

  model.txt      the LightGBM text model (Booster.save_model)
  contract.json  model_id, features in model order with types, risk bands, training facts
  parity.csv     held-out rows and LightGBM's own probabilities, for the Go parity test
  card.json      test metrics (AUC, ECE, Bayes AUC from the simulator's true p_dna), counts

Usage:
  train.py --trainset trainset.csv --out models/default [--config config.json]

The config file (JSON, all keys optional) overrides DEFAULTS below; see docs/model.md.
Training is deterministic for a given trainset, config and LightGBM version.
"""

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

ID_COLUMNS = ["appointment_id", "booking_version", "event_time"]
LABEL = "label"
TRUTH = "p_dna"

DEFAULTS = {
    # Fractions of rows, in event_time order, for train / validation / test.
    "split": [0.70, 0.15, 0.15],
    # Features the model treats as categories (integer codes, never pandas categories: the Go
    # scorer feeds the raw codes).
    "categorical": ["specialty"],
    # Features to drop from the trainset columns (default: use them all).
    "exclude": [],
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
    # Risk bands from validation scores: medium = at or above the training base rate,
    # high = top high_fraction of validation scores, very_high = top very_high_fraction.
    "bands": {"high_fraction": 0.10, "very_high_fraction": 0.03},
    # Parity rows: held-out test rows plus perturbed copies that exercise missing values and
    # unseen / missing categories.
    "parity_rows": 12000,
    "parity_perturbed_rows": 2000,
}


def log(msg):
    print(f"train.py: {msg}", file=sys.stderr, flush=True)


def load_config(path):
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        with open(path) as f:
            user = json.load(f)
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            sys.exit(f"train.py: {path}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        for k, v in user.items():
            if isinstance(v, dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    split = cfg["split"]
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-9:
        sys.exit(f"train.py: split {split}: want three positive fractions summing to 1")
    return cfg


def read_trainset(path):
    """Reads the trainset by position: cmd/trainset writes the three ID columns, the
    feature columns, then label and p_dna. booking_version is both an ID column and a
    feature, so the header names it twice; the ID columns are renamed with a leading "_"."""
    with open(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
    if header[:3] != ID_COLUMNS or header[-2:] != [LABEL, TRUTH]:
        sys.exit(f"train.py: {path}: header {header[:3]}...{header[-2:]}, want {ID_COLUMNS}...{[LABEL, TRUTH]}; is it cmd/trainset output?")
    names = ["_" + c for c in ID_COLUMNS] + header[3:]
    if len(set(names)) != len(names):
        sys.exit(f"train.py: {path}: duplicate feature columns in {header[3:-2]}")
    df = pd.read_csv(path, header=0, names=names, dtype={"_appointment_id": str}, keep_default_na=False, na_values=[""])
    df["_event_time"] = pd.to_datetime(df["_event_time"], utc=True, format="ISO8601")
    if not df["_event_time"].is_monotonic_increasing:
        sys.exit(f"train.py: {path}: rows are not in event_time order")
    return df, header[3:-2]


def ece(y, p, bins=10):
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
            sys.exit(f"train.py: risk bands not ascending ({out}); adjust bands in the config")
    return out


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainset", required=True, help="CSV written by cmd/trainset")
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--config", help="JSON overriding the defaults (see docs/model.md)")
    args = ap.parse_args()
    cfg = load_config(args.config)

    df, columns = read_trainset(args.trainset)
    features = [c for c in columns if c not in cfg["exclude"]]
    categorical = [c for c in cfg["categorical"] if c in features]
    for c in features:
        df[c] = df[c].astype("float64")
    n = len(df)
    a, b = int(n * cfg["split"][0]), int(n * (cfg["split"][0] + cfg["split"][1]))
    train, valid, test = df.iloc[:a], df.iloc[a:b], df.iloc[b:]
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
    model_id = f"dna-gbm-{now:%Y%m%d}-{model_hash[:8]}"
    p_valid = model.predict(valid[features])
    p_test = model.predict(test[features])
    base_rate = float(train[LABEL].mean())

    contract = {
        "model_id": model_id,
        "features": [{"name": c, "type": "categorical" if c in categorical else "numeric"} for c in features],
        "risk_bands": bands(cfg, base_rate, p_valid),
        "trained_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_rows": len(train),
        "training_window": window(train),
        "label": "did_not_attend",
        "lightgbm_version": lgb.__version__,
        "model_sha256": model_hash,
    }
    with open(os.path.join(args.out, "contract.json"), "w") as f:
        json.dump(contract, f, indent=2)
        f.write("\n")

    rng = np.random.default_rng(params.get("seed", 0))
    parity = parity_rows(cfg, test, features, categorical, rng)
    parity["probability"] = model.predict(parity[features])
    with open(os.path.join(args.out, "parity.csv"), "w") as f:
        f.write(",".join(["kind"] + features + ["probability"]) + "\n")
        for row in parity.itertuples(index=False):
            f.write(row[0] + "," + ",".join(fmt(x) for x in row[1:]) + "\n")

    y_test = test[LABEL].to_numpy()
    card = {
        "model_id": model_id,
        "trained_at": contract["trained_at"],
        "lightgbm_version": lgb.__version__,
        "best_iteration": booster.best_iteration,
        "rows": {"train": len(train), "validation": len(valid), "test": len(test), "parity": len(parity)},
        "windows": {"train": window(train), "validation": window(valid), "test": window(test)},
        "base_rate_train": base_rate,
        "test": metrics(y_test, p_test),
        "validation": metrics(valid[LABEL].to_numpy(), p_valid),
        "risk_bands": contract["risk_bands"],
        "band_rates_test": band_rates(contract["risk_bands"], y_test, p_test),
        "feature_importance_gain": {
            k: round(float(v), 3)
            for k, v in sorted(zip(features, model.feature_importance("gain")), key=lambda kv: -kv[1])
        },
        "config": cfg,
    }
    if TRUTH in test.columns and test[TRUTH].notna().any():
        known = test[TRUTH].notna().to_numpy()
        card["test"]["bayes_auc"] = float(roc_auc_score(y_test[known], test[TRUTH].to_numpy()[known]))
        card["test"]["bayes_rows"] = int(known.sum())
    with open(os.path.join(args.out, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    t = card["test"]
    log(f"{model_id}: test AUC {t['auc']:.4f}, ECE {t['ece']:.4f}, Bayes AUC {t.get('bayes_auc', float('nan')):.4f}")


def band_rates(bands_, y, p):
    """Share of test bookings and their DNA rate per band."""
    out = {}
    edges = [b["min_probability"] for b in bands_] + [math.inf]
    for b, lo, hi in zip(bands_, edges, edges[1:]):
        m = (p >= lo) & (p < hi)
        out[b["name"]] = {"share": float(m.mean()), "dna_rate": float(y[m].mean()) if m.any() else None}
    return out


if __name__ == "__main__":
    main()
