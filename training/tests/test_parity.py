"""The synthetic parity set: edge cases present, no row of the data in it."""

import numpy as np
import pandas as pd

import parity


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "lead": rng.lognormal(3, 1, n),
        "count": rng.poisson(1, n).astype(float),
        "flag": rng.integers(0, 2, n).astype(float),
        "spec": rng.choice([100.0, 110.0, 130.0, 999.0], n, p=[0.5, 0.3, 0.198, 0.002]),
    })
    df.loc[rng.random(n) < 0.1, "lead"] = np.nan
    return df


def test_no_real_row_and_edges():
    df = data()
    # Few distinct values: many synthetic rows would equal a real one and must be dropped.
    small = df[["count", "flag"]]
    out, rep = parity.rows(small, ["count", "flag"], [], 2000, 200, np.random.default_rng(1))
    real = {tuple(r) for r in small.fillna(-1e300).itertuples(index=False)}
    assert rep["dropped_equal_to_a_real_row"] > 0
    assert not any(tuple(r) in real for r in out[["count", "flag"]].fillna(-1e300).itertuples(index=False))

    feats = ["lead", "count", "flag", "spec"]
    out, rep = parity.rows(df, feats, ["spec"], 2000, 300, np.random.default_rng(1))
    real = {tuple(r) for r in df.fillna(-1e300).itertuples(index=False)}
    assert not any(tuple(r) in real for r in out[feats].fillna(-1e300).itertuples(index=False))
    assert rep["rows"] == len(out) and rep["synthetic"] > 1700 and rep["dropped_equal_to_a_real_row"] > 0 and rep["edge"] > 0 and rep["perturbed"] > 200
    edge = out[out["kind"] == "edge"]
    assert edge[feats].isna().all(axis=1).any()  # all missing
    assert np.isposinf(edge["lead"]).any() and np.isneginf(edge["lead"]).any()
    assert (edge["spec"] == -1).any() and (edge["spec"] == 2147483646).any()
    syn = out[out["kind"] == "synthetic"]
    # A code seen fewer than 10 times (999: ~6 rows) is never drawn; numbers stay inside the
    # training range's 0.5-99.5% quantiles and whole-number features stay whole.
    assert set(syn["spec"].dropna()) <= {100.0, 110.0, 130.0}
    assert syn["lead"].max() <= df["lead"].quantile(0.995) and syn["lead"].min() >= df["lead"].quantile(0.005)
    assert (syn["count"].dropna() == syn["count"].dropna().round()).all()
    # Missing at the training rate (here with no row equal to a real one to drop).
    out, rep = parity.rows(df[["lead"]].assign(x=np.random.default_rng(3).normal(size=len(df))), ["lead", "x"], [], 3000, 0,
                           np.random.default_rng(2))
    assert rep["dropped_equal_to_a_real_row"] == 0
    assert abs(out.loc[out["kind"] == "synthetic", "lead"].isna().mean() - 0.1) < 0.02
