"""parity.csv: synthetic feature rows on which the Go scorer must match LightGBM.

A model folder is shared between trusts, so it holds no row of the data it was trained on.
The parity rows are made up:

* "synthetic": each feature drawn on its own from its training marginal: missing at its
  training rate; a category only among the codes seen at least MIN_CODE_ROWS times; a number
  at a random quantile between the 0.5th and 99.5th percentile (rounded when the feature
  only takes whole numbers). Features are drawn independently, so a row mixes values of
  different bookings.
* "edge": every feature missing; each feature missing alone; each numeric feature at +inf,
  -inf, 0, -1 and +-1e9; each categorical at -1, never-seen codes and 2^31-2.
* "perturbed": synthetic rows with a random third of their values knocked out.

Any row that equals a real training-set row (all features, missing equal to missing) is
dropped, and the count is reported: no row of parity.csv is a booking.
"""

import numpy as np
import pandas as pd

MIN_CODE_ROWS = 10
UNSEEN_CODES = [2147483646.0, 999999.0, 123456.0]


def _marginal(col, categorical, n, rng):
    x = col.to_numpy(float)
    known = x[~np.isnan(x)]
    out = np.full(n, np.nan)
    if len(known) == 0:
        return out
    missing = rng.random(n) < (1 - len(known) / len(x))
    if categorical:
        codes, counts = np.unique(known, return_counts=True)
        keep = counts >= MIN_CODE_ROWS
        if not keep.any():
            return out  # no code common enough to show: missing only (the edge rows cover codes)
        codes, counts = codes[keep], counts[keep]
        vals = rng.choice(codes, size=n, p=counts / counts.sum())
    else:
        vals = np.quantile(known, rng.uniform(0.005, 0.995, size=n))
        if np.all(known == np.round(known)):
            vals = np.round(vals)
    out[~missing] = vals[~missing]
    return out


def _edges(features, categorical, base):
    rows = [dict.fromkeys(features, np.nan)]
    for f in features:
        r = dict(base)
        r[f] = np.nan
        rows.append(r)
        values = [-1.0] + UNSEEN_CODES if f in categorical else [np.inf, -np.inf, 0.0, -1.0, 1e9, -1e9]
        for v in values:
            r = dict(base)
            r[f] = v
            rows.append(r)
    return pd.DataFrame(rows, columns=features)


def _key(df):
    """Row identity with missing equal to missing, for matching against real rows."""
    return pd.util.hash_pandas_object(df.fillna(-9.87654321e300), index=False)


def rows(data, features, categorical, n_synthetic, n_perturbed, rng):
    """The parity rows (kind + features) and a report for the card. data is every labelled
    row of the training set (all windows)."""
    syn = pd.DataFrame({f: _marginal(data[f], f in categorical, n_synthetic, rng) for f in features})
    pert = pd.DataFrame({f: _marginal(data[f], f in categorical, n_perturbed, rng) for f in features})
    pert = pert.mask(rng.random(pert.shape) < 1 / 3)
    base = syn.iloc[0].to_dict() if len(syn) else dict.fromkeys(features, 0.0)
    edge = _edges(features, categorical, base)
    parts = []
    for kind, part in (("synthetic", syn), ("edge", edge), ("perturbed", pert)):
        part = part.copy()
        part.insert(0, "kind", kind)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    real = set(_key(data[features]).to_numpy())
    clash = _key(out[features]).isin(real).to_numpy()
    out = out[~clash].reset_index(drop=True)
    report = {"rows": int(len(out)), "synthetic": int((out["kind"] == "synthetic").sum()), "edge": int((out["kind"] == "edge").sum()),
              "perturbed": int((out["kind"] == "perturbed").sum()), "dropped_equal_to_a_real_row": int(clash.sum()),
              "how": "each feature drawn on its own from its training marginal, plus edge cases; no row equals a real one"}
    return out, report
