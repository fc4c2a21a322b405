"""AUC interval, band targets and the subgroup table."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import metrics


def scored(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(z - 2.3)))
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_auc_ci_matches_sklearn_and_bootstrap():
    y, p = scored()
    ci = metrics.auc_ci(y, p)
    assert ci["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    rng = np.random.default_rng(1)
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc_score(y[i], p[i]))
    # DeLong's standard error against the bootstrap's (an independent estimate).
    assert ci["se"] == pytest.approx(np.std(boot), rel=0.15)
    lo, hi = ci["ci95"]
    assert lo < ci["auc"] < hi and hi - lo == pytest.approx(2 * metrics.Z95 * ci["se"], rel=1e-9)
    # Ties are handled with midranks, as sklearn does.
    assert metrics.auc_ci(y, np.round(p, 1))["auc"] == pytest.approx(roc_auc_score(y, np.round(p, 1)), abs=1e-12)
    assert metrics.auc_ci(np.zeros(5), np.arange(5.0)) is None


def test_band_targets():
    bands = [{"name": "low", "min_probability": 0}, {"name": "medium", "min_probability": 0.1},
             {"name": "high", "min_probability": 0.2}, {"name": "very_high", "min_probability": 0.4}]
    p = np.r_[np.full(70, 0.05), np.full(10, 0.15), np.full(16, 0.3), np.full(4, 0.5)]
    y = np.zeros(100)
    rates = metrics.band_rates(bands, y, p)
    t = {x["band"]: x for x in metrics.band_targets(bands, rates, {"high": 0.10, "very_high": 0.03})}
    assert t["high"]["share"] == pytest.approx(0.20) and t["high"]["off_target"]  # 20% against 10%: off by more than half
    assert t["very_high"]["share"] == pytest.approx(0.04) and not t["very_high"]["off_target"]  # 4% against 3%


def test_subgroup_table_warnings():
    y, p = scored(6000)
    n = len(y)
    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, n)
    # Group 1: scores are noise, so its AUC is ~0.5. Group 2: flagged far more than its DNAs.
    p = p.copy()
    p[g == 1] = rng.permutation(p[g == 1])
    flagged = p >= np.quantile(p, 0.9)
    flagged[(g == 2) & (rng.random(n) < 0.5)] = True
    small = np.zeros(n, bool)
    small[:7] = True
    groups = [("group", {"a": g == 0, "b": g == 1, "c": g == 2}), ("tiny", {"x": small})]
    rows, warnings = metrics.subgroup_table(groups, y, p, flagged)
    by = {r["group"]: r for r in rows}
    assert by["b"]["auc"] < roc_auc_score(y, p) - 0.05 and any("AUC" in w for w in by["b"]["warnings"])
    assert by["c"]["share_of_all_flagged"] > 2 * by["c"]["share_of_all_dnas"] and any("flagged" in w for w in by["c"]["warnings"])
    assert by["a"]["warnings"] == []
    assert by["x"]["suppressed"] and "dna_rate" not in by["x"]
    assert len(warnings) == 2
    # observed / expected is DNAs over the sum of predicted risks.
    assert by["a"]["observed_expected"] == pytest.approx(y[g == 0].sum() / p[g == 0].sum())


def test_auc_difference_ci_paired():
    """The paired DeLong difference: the two AUCs are sklearn's, the standard error agrees with
    a paired bootstrap, and it is much smaller than the unpaired one for correlated scores."""
    y, p = scored(n=6000, seed=2)
    rng = np.random.default_rng(3)
    a = p * np.exp(rng.normal(0, 0.6, len(p)))  # a noisier copy of the same score
    b = p * np.exp(rng.normal(0, 0.2, len(p)))
    d = metrics.auc_difference_ci(y, a, b)
    assert d["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert d["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert d["difference"] == pytest.approx(d["auc_b"] - d["auc_a"], abs=1e-12) and d["difference"] > 0
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc_score(y[i], b[i]) - roc_auc_score(y[i], a[i]))
    assert d["se"] == pytest.approx(np.std(boot), rel=0.2)
    unpaired = np.hypot(metrics.auc_ci(y, a)["se"], metrics.auc_ci(y, b)["se"])
    assert d["se"] < 0.7 * unpaired
    assert d["ci95"][0] > 0  # the less noisy score is better beyond chance
    # The same score twice: no difference and no spread.
    same = metrics.auc_difference_ci(y, a, a)
    assert same["difference"] == 0 and same["se"] == 0
    assert metrics.auc_difference_ci(np.r_[1, 0, 0], np.r_[0.3, 0.1, 0.2], np.r_[0.3, 0.1, 0.2]) is None
