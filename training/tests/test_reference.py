"""The training reference (reference.py, reference.json): bins by the shared rule reproduce the
shares, missing values are counted as the Go scorer leaves them out of the risk event, and every
committed model directory has a reference that belongs to its contract. make model writes one
(test_end_to_end checks it against the training set's test window with check_built)."""

import json
import math
import os

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import calibrate
import reference
import train
import windows
from conftest import ROOT

MODELS = os.path.join(ROOT, "models")


def shares_by_rule(entry, values):
    """Shares of values (a 1-D array of model inputs) by the documented bin rule, and the
    missing share, computed here independently of reference.py."""
    x = np.asarray(values, float)
    cat = entry["type"] == "categorical"
    missing = np.isnan(x) | ((x < 0) | (x >= 2**31 - 1) if cat else False)
    v = x[~missing]
    if cat:
        cats = entry["categories"]
        bins = np.array([cats.index(c) if c in cats else len(cats) for c in v], dtype=int)
        k = len(cats) + 1
    else:
        bins = np.searchsorted(entry["edges"], v, side="left")
        k = len(entry["edges"]) + 1
    counts = np.bincount(bins, minlength=k)
    shares = counts / counts.sum() if counts.sum() else counts.astype(float)
    return missing.mean(), shares


def check_reference(ref, contract):
    """Structure: schema, model id, contract features in order, bins and shares."""
    assert ref["schema"] == "reference.v1" and ref["model_id"] == contract["model_id"]
    assert ref["rows"] > 0 and ref["window"]["from"] <= ref["window"]["to"] and ref["how"]
    assert [(f["name"], f["type"]) for f in ref["features"]] == [(f["name"], f["type"]) for f in contract["features"]]
    s = ref["score"]
    assert 1 <= len(s["edges"]) <= 9 and all(a < b for a, b in zip(s["edges"], s["edges"][1:]))
    assert len(s["shares"]) == len(s["edges"]) + 1 and math.isclose(sum(s["shares"]), 1, abs_tol=1e-9)
    for f in ref["features"]:
        assert 0 <= f["missing_share"] <= 1
        if f["type"] == "numeric":
            assert "categories" not in f and len(f["edges"]) <= 9 and len(f["shares"]) == len(f["edges"]) + 1
            assert all(a < b for a, b in zip(f["edges"], f["edges"][1:]))
        else:
            assert "edges" not in f and len(f["shares"]) == len(f["categories"]) + 1
        total = sum(f["shares"])
        assert math.isclose(total, 1, abs_tol=1e-9) or (total == 0 and f["missing_share"] == 1), f


def test_missing_share_and_bins_on_a_hand_made_frame():
    df = pd.DataFrame({
        "lead": [1.0, 2.0, np.nan, 4.0, 4.0, 8.0, np.nan, 16.0],
        "spec": [110.0, 130.0, np.nan, -1.0, 110.0, 2.0**31 - 1, 130.0, 420.0],
        "gone": [np.nan] * 8,
    })
    served = np.linspace(0.01, 0.5, 8)
    ref = reference.build("m-1", df, ["lead", "spec", "gone"], {"spec"}, served, {"from": "2025-01-01", "to": "2025-01-31"})
    lead, spec, gone = ref["features"]
    assert lead["missing_share"] == 2 / 8
    # NaN, a negative code and a code past int32 are what the scorer leaves out.
    assert spec["missing_share"] == 3 / 8
    assert spec["categories"] == [110.0, 130.0, 420.0] and spec["shares"] == [2 / 5, 2 / 5, 1 / 5, 0.0]
    assert gone["missing_share"] == 1 and gone["edges"] == [] and gone["shares"] == [0.0]
    # Edges are values that occur; a value equal to an edge is in the bin below it.
    assert set(lead["edges"]) <= {1.0, 2.0, 4.0, 8.0, 16.0}
    for f, col in zip(ref["features"], ["lead", "spec", "gone"]):
        miss, shares = shares_by_rule(f, df[col])
        assert miss == f["missing_share"] and np.allclose(shares, f["shares"], atol=1e-12)
    assert np.allclose(shares_by_rule({"type": "numeric", "edges": ref["score"]["edges"]}, served)[1], ref["score"]["shares"])
    check_reference(ref, {"model_id": "m-1", "features": [{"name": "lead", "type": "numeric"}, {"name": "spec", "type": "categorical"},
                                                          {"name": "gone", "type": "numeric"}]})
    # The file reads back exactly (floats as repr) and is JSON without NaN.
    text = reference.dumps(ref)
    assert json.loads(text) == ref and "NaN" not in text


def test_bins_reproduce_shares_on_many_rows():
    rng = np.random.default_rng(3)
    n = 20000
    df = pd.DataFrame({
        "lead": rng.lognormal(3, 1, n),
        "count": rng.poisson(0.7, n).astype(float),
        "spec": rng.choice([100.0, 110.0, 130.0], n, p=[0.5, 0.3, 0.2]),
    })
    df.loc[rng.random(n) < 0.1, "lead"] = np.nan
    served = rng.beta(1, 12, n)
    ref = reference.build("m-2", df, ["lead", "count", "spec"], {"spec"}, served, {"from": "2025-01-01", "to": "2025-01-31"})
    assert len(ref["score"]["edges"]) == 9 and np.allclose(ref["score"]["shares"], 0.1, atol=1e-3)
    lead = ref["features"][0]
    assert len(lead["edges"]) == 9 and np.allclose(lead["shares"], 0.1, atol=1e-3) and abs(lead["missing_share"] - 0.1) < 0.01
    # A count with few values: its unique cut points, fewer than 9.
    assert ref["features"][1]["edges"][:2] == [0.0, 1.0] and len(ref["features"][1]["edges"]) < 9
    for f, col in zip(ref["features"], ["lead", "count", "spec"]):
        miss, shares = shares_by_rule(f, df[col])
        assert miss == f["missing_share"] and np.allclose(shares, f["shares"], atol=1e-12)


def committed_models():
    return [d for d in ("default", "decision", "challenger") if os.path.isdir(os.path.join(MODELS, d))]


@pytest.mark.parametrize("name", committed_models())
def test_committed_model_has_its_reference(name):
    d = os.path.join(MODELS, name)
    with open(os.path.join(d, "contract.json")) as f:
        contract = json.load(f)
    with open(os.path.join(d, "reference.json")) as f:
        ref = json.load(f)
    check_reference(ref, contract)
    with open(os.path.join(d, "card.json")) as f:
        card = json.load(f)
    w = card["windows"]["test"]
    assert (ref["window"]["from"], ref["window"]["to"], ref["rows"]) == (w["from"], w["to"], w["rows"])


def check_built(out, work):
    """A model directory make model built (out, with its KEEP work dir): reference.json is the
    test window's rows of the training set, binned by the rule, and the served probabilities
    of the model as saved (trees, then the contract's calibration)."""
    with open(out / "contract.json") as f:
        contract = json.load(f)
    with open(out / "reference.json") as f:
        ref = json.load(f)
    check_reference(ref, contract)
    df, _ = train.read_trainset(str(work / "trainset.csv"))
    d = df[windows.DATE]
    rows = df[(d >= pd.Timestamp(ref["window"]["from"])) & (d <= pd.Timestamp(ref["window"]["to"]))]
    assert len(rows) == ref["rows"]
    names = [f["name"] for f in contract["features"]]
    for f in ref["features"]:
        miss, shares = shares_by_rule(f, rows[f["name"]].astype(float))
        assert math.isclose(miss, f["missing_share"], abs_tol=1e-12) and np.allclose(shares, f["shares"], atol=1e-12), f["name"]
    cal = contract.get("calibration")
    table = (np.array(cal["x"]), np.array(cal["y"])) if cal else None
    served = calibrate.apply_table(table, lgb.Booster(model_file=str(out / "model.txt")).predict(rows[names].astype(float)))
    _, shares = shares_by_rule({"type": "numeric", "edges": ref["score"]["edges"]}, served)
    assert np.allclose(shares, ref["score"]["shares"], atol=1e-12)
