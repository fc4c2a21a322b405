#!/usr/bin/env python3
"""The training reference of a model: what its inputs and served scores looked like on the
most recent held-out rows, for live drift monitoring (PSI of the score and of each feature,
and the missing-value rate per feature, against these figures; issue 14).

train.py writes reference.json into every model directory it builds, from the test window's
rows scored as served (trees, then the contract's calibration map). For a model directory built
before reference.json existed, re-derive it from the same training set:

  reference.py --model-dir models/default --trainset trainset.csv

(the split is recomputed with the config stored in the model's card.json, and must give the
card's test window; the rows are scored with the directory's model.txt and contract.json).

reference.json (schema "reference.v1"):

  model_id, rows (test window rows), window {from, to} (UK appointment dates), how (one
  sentence), score {edges, shares}: deciles of the served probability (up to 9 increasing
  edges; fewer only when served probabilities tie, as isotonic steps can) and the share of rows
  in each of the len(edges)+1 bins; features: one entry per contract feature, in contract
  order: {name, type, missing_share, edges (numeric) or categories (categorical), shares}.

Bin rule, shared with the Go monitor (sort.SearchFloat64s): the bin of value v is the number of
edges strictly less than v, numpy.searchsorted(edges, v, side="left"). A numeric feature has up
to 9 unique quantile cut points of its non-missing values and len(edges)+1 shares; a
categorical feature lists its categories and has one share per category plus a last "other"
share (values not listed: none in these rows unless a feature has more than MAX_CATEGORIES).
Shares are over the non-missing values and sum to 1 (all 0 when every row is missing).

Values are in the representation of the Go scorer's risk event "features" map
(scoring.Model.FeatureMap: the model inputs by contract name, missing ones left out), which is
also the trainset CSV's: numeric features as numbers, missing = NaN (an empty cell); the
specialty as its treatment function code (110, 130, ...); a categorical booking extra as its
category code, the position of its text in the contract's "categories" list (scoring/
categories.go; cmd/trainset writes the same codes). A categorical value that is NaN, negative
or not below 2^31 - 1 is missing (scoring's category(): the scorer feeds -1 and FeatureMap
leaves it out).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import pandas as pd

SCHEMA = "reference.v1"
FILE = "reference.json"
QUANTILES = [i / 10 for i in range(1, 10)]
# A categorical feature lists at most this many categories (the most frequent); the rest
# count as "other".
MAX_CATEGORIES = 50
HOW = ("the test window's rows (the most recent appointments held out from training and "
       "calibration), scored as served: trees, then the contract's calibration map")
MAX_CATEGORY = 2**31 - 1


def missing_mask(x, categorical):
    """Rows whose value FeatureMap leaves out: NaN, and for a categorical also negative or
    past int32 (the scorer's category() makes them -1)."""
    x = np.asarray(x, dtype=float)
    m = np.isnan(x)
    if categorical:
        m |= ~(x >= 0) | (x >= MAX_CATEGORY)
    return m


def bin_shares(values, edges):
    """Share of values in each of len(edges)+1 bins by the bin rule (searchsorted left)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges, float), values, side="left"), minlength=len(edges) + 1)
    n = counts.sum()
    return [float(c / n) if n else 0.0 for c in counts]


def quantile_edges(values):
    """Up to 9 unique cut points at the deciles of values (each a value that occurs:
    numpy's "lower" method, so a feature with few distinct values gets edges on them)."""
    if len(values) == 0:
        return []
    return [float(e) for e in np.unique(np.quantile(values, QUANTILES, method="lower"))]


def feature_entry(name, x, categorical):
    x = np.asarray(x, dtype=float)
    miss = missing_mask(x, categorical)
    v = x[~miss]
    entry = {"name": name, "type": "categorical" if categorical else "numeric",
             "missing_share": float(miss.mean()) if len(x) else 0.0}
    if not categorical:
        edges = quantile_edges(v)
        entry["edges"] = edges
        entry["shares"] = bin_shares(v, edges)
        return entry
    vals, counts = np.unique(v, return_counts=True)
    if len(vals) > MAX_CATEGORIES:
        keep = np.sort(np.argsort(-counts, kind="stable")[:MAX_CATEGORIES])
        vals, counts = vals[keep], counts[keep]
    n = len(v)
    entry["categories"] = [float(c) for c in vals]
    entry["shares"] = [float(c / n) for c in counts] + [float((n - counts.sum()) / n) if n else 0.0]
    return entry


def build(model_id, rows, features, categorical, served, window):
    """The reference of model_id from rows (a DataFrame with the feature columns), their
    served probabilities and the window {"from", "to"} they cover."""
    served = np.asarray(served, dtype=float)
    if len(rows) != len(served) or len(rows) == 0:
        raise ValueError(f"reference: {len(rows)} rows and {len(served)} served probabilities; want the same, at least 1")
    if not np.isfinite(served).all():
        raise ValueError("reference: a served probability is not finite")
    edges = [float(e) for e in np.unique(np.quantile(served, QUANTILES))]
    return {
        "schema": SCHEMA,
        "model_id": model_id,
        "rows": int(len(rows)),
        "window": {"from": window["from"], "to": window["to"]},
        "how": HOW,
        "score": {"edges": edges, "shares": bin_shares(served, edges)},
        "features": [feature_entry(f, rows[f].to_numpy(float), f in categorical) for f in features],
    }


def dumps(ref):
    """reference.json's text: one line per top-level key and per feature (floats as repr,
    which read back exactly)."""
    one = lambda v: json.dumps(v, allow_nan=False)  # noqa: E731
    lines = [f" {one(k)}: {one(v)}" for k, v in ref.items() if k != "features"]
    feats = ",\n".join("  " + one(f) for f in ref["features"])
    return "{\n" + ",\n".join(lines) + ',\n "features": [\n' + feats + "\n ]\n}\n"


def write(out_dir, ref):
    path = os.path.join(out_dir, FILE)
    with open(path, "w") as f:
        f.write(dumps(ref))
    return path


def main():
    # Imported here: train.py imports this module, and these import lightgbm.
    import lightgbm as lgb

    import calibrate
    import train
    import windows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="model directory (model.txt, contract.json, card.json)")
    ap.add_argument("--trainset", required=True, help="the cmd/trainset CSV the model was trained on")
    args = ap.parse_args()
    d = args.model_dir
    with open(os.path.join(d, "contract.json")) as f:
        contract = json.load(f)
    with open(os.path.join(d, "card.json")) as f:
        card = json.load(f)
    cfg = card["config"]
    df, _ = train.read_trainset(args.trainset)
    features = [f["name"] for f in contract["features"]]
    categorical = {f["name"] for f in contract["features"] if f["type"] == "categorical"}
    missing = [f for f in features if f not in df.columns]
    if missing:
        sys.exit(f"reference.py: ERROR: {args.trainset} lacks the model's features {missing}")
    for c in features:
        df[c] = df[c].astype("float64")
    _, _, test, win = windows.split(cfg, df)
    want = card["windows"]["test"]
    if (win["test"]["from"], win["test"]["to"], len(test)) != (want["from"], want["to"], want["rows"]):
        sys.exit(f"reference.py: ERROR: this training set's test window is {win['test']['from']} to {win['test']['to']} "
                 f"({len(test)} rows), the card's {want['from']} to {want['to']} ({want['rows']} rows): not the data the model was trained on")
    model = lgb.Booster(model_file=os.path.join(d, "model.txt"))
    cal = contract.get("calibration")
    table = (np.array(cal["x"]), np.array(cal["y"])) if cal else None
    served = calibrate.apply_table(table, model.predict(test[features]))
    path = write(d, build(contract["model_id"], test, features, categorical, served, win["test"]))
    print(f"reference.py: wrote {path}: {len(test)} rows, {win['test']['from']} to {win['test']['to']}", file=sys.stderr)


if __name__ == "__main__":
    main()
