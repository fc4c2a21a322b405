"""The leakage guard refuses leaky features, names them, and yields to allow_leakage."""

import numpy as np
import pandas as pd

import leakage

CFG = {"leakage": {"max_single_feature_auc": 0.9, "max_extra_auc_gain": 0.1}, "allow_leakage": False,
       "params": {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 20, "metric": ["binary_logloss"],
                  "deterministic": True, "num_threads": 1, "seed": 1, "verbose": -1, "force_row_wise": True}}


def frames(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    lead = rng.lognormal(3, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 0.3 * np.log1p(lead))))).astype(int)
    df = pd.DataFrame({"lead_time_days": lead, "label": y,
                       "outcome_code": np.where(y == 1, rng.choice([3.0, 4.0], n), rng.choice([1.0, 2.0, 4.0], n, p=[0.5, 0.45, 0.05])),
                       "extra.noise": rng.normal(size=n)})
    return df.iloc[: n * 3 // 4], df.iloc[n * 3 // 4:]


def test_single_feature_auc_refuses_and_allows():
    train, valid = frames()
    feats = ["lead_time_days", "outcome_code"]
    rep, problems = leakage.check(CFG, train, valid, feats, ["outcome_code"], "label", None)
    a = rep["single_feature_auc"]["auc"]
    assert a["outcome_code"] >= 0.9 and 0.5 < a["lead_time_days"] < 0.75
    assert len(problems) == 1 and "outcome_code alone reaches AUC" in problems[0]
    assert not rep["passed"] and not rep["flip_check"]["run"]
    rep, problems = leakage.check(dict(CFG, allow_leakage=["outcome_code"]), train, valid, feats, ["outcome_code"], "label", None)
    assert problems == [] and rep["findings_allowed"] and rep["passed"]


def test_extra_gain_refuses_whole_extract_count():
    """A per-patient count over the whole extract: weak alone, decisive with the history."""
    rng = np.random.default_rng(3)
    rows = []
    for pid in range(1500):
        n = 1 + rng.poisson(4)
        y = (rng.random(n) < 0.15).astype(int)
        prior = np.r_[0, np.cumsum(y)[:-1]]
        for i in range(n):
            rows.append({"prior_dna": prior[i], "prior_appointments": i, "label": y[i], "extra.dna_count_total": y.sum(),
                         "extra.noise": rng.normal()})
    df = pd.DataFrame(rows).astype(float)
    df["label"] = df["label"].astype(int)
    train, valid = df.iloc[: len(df) * 3 // 4], df.iloc[len(df) * 3 // 4:]
    feats = ["prior_dna", "prior_appointments", "extra.dna_count_total", "extra.noise"]
    rep, problems = leakage.check(CFG, train, valid, feats, [], "label", None)
    assert rep["single_feature_auc"]["auc"]["extra.dna_count_total"] < 0.9  # the single-feature check alone misses it
    gains = rep["extra_auc_gain"]["gain"]
    assert gains["extra.dna_count_total"] >= 0.1 and abs(gains["extra.noise"]) < 0.05
    assert len(problems) == 1 and "extra.dna_count_total adds" in problems[0]


def test_flip_report_refuses_changed_feature():
    train, valid = frames()
    flip = {"cut_off": "2024-06-01T00:00:00Z", "outcomes_flipped": 100, "rows_at_or_before_cut_off": 50, "rows_after_cut_off": 50,
            "columns": ["lead_time_days", "prior_dna"], "changed_at_or_before_cut_off": {"lead_time_days": 3, "prior_dna": 0},
            "changed_after_cut_off": {"lead_time_days": 3, "prior_dna": 40}, "ok": False}
    rep, problems = leakage.check(CFG, train, valid, ["lead_time_days"], [], "label", flip)
    assert len(problems) == 1 and "lead_time_days changed in 3 rows" in problems[0]
    assert rep["flip_check"]["changed_before"] == {"lead_time_days": 3}
    flip["changed_at_or_before_cut_off"]["lead_time_days"] = 0
    flip["ok"] = True
    rep, problems = leakage.check(CFG, train, valid, ["lead_time_days"], [], "label", flip)
    assert problems == [] and rep["flip_check"]["ok"]
