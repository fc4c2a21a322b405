"""Measures of a DNA model on a window of bookings: AUC with a DeLong 95% interval, ECE, band
shares against their targets, contacts per prevented DNA, and the subgroup table.

Every function takes outcomes y (1 = did not attend) and served probabilities p (the trees,
then the calibration table) of one window the model and its choices never saw.
"""

import math

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

BINS = 10
Z95 = 1.959963984540054


def ece(y, p, bins=BINS):
    """Expected calibration error over equal-width probability bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(total)


def auc_ci(y, p):
    """ROC AUC with its DeLong standard error and 95% interval (DeLong, DeLong and
    Clarke-Pearson 1988; the midrank form of Sun and Xu 2014). Returns a dict, or None when
    a class is missing."""
    y = np.asarray(y)
    pos, neg = np.asarray(p)[y == 1], np.asarray(p)[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return None
    tx, ty = rankdata(pos), rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n  # per DNA: share of attenders scored below it
    v01 = 1 - (tz[m:] - ty) / m  # per attender: share of DNAs scored above it
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(max(var, 0.0))
    return {"auc": float(auc), "se": se, "ci95": [max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)]}


def _placements(y, p):
    """DeLong's structural components: per DNA the share of attenders scored below it, per
    attender the share of DNAs scored above it (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    tx, ty = rankdata(pos), rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    return (tz[:m] - tx) / n, 1 - (tz[m:] - ty) / m


def auc_difference_ci(y, p_a, p_b):
    """AUC(p_b) - AUC(p_a) on the same rows with the paired DeLong standard error and 95%
    interval (DeLong, DeLong and Clarke-Pearson 1988): the two scores of one appointment are
    correlated, so the interval is narrower than the two AUCs' own intervals suggest. Returns
    a dict, or None when a class is missing or there is only one of it."""
    y = np.asarray(y)
    p_a, p_b = np.asarray(p_a, float), np.asarray(p_b, float)
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        return None
    a10, a01 = _placements(y, p_a)
    b10, b01 = _placements(y, p_b)
    diff = float(b10.mean() - a10.mean())
    s10 = np.cov(np.vstack([a10, b10]), ddof=1)
    s01 = np.cov(np.vstack([a01, b01]), ddof=1)
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    se = math.sqrt(max(float(var), 0.0))
    return {"auc_a": float(a10.mean()), "auc_b": float(b10.mean()), "difference": diff, "se": se,
            "ci95": [diff - Z95 * se, diff + Z95 * se]}


def metrics(y, p):
    ci = auc_ci(y, p)
    return {
        "auc": float(roc_auc_score(y, p)),
        "auc_ci95": ci["ci95"],
        "ece": ece(y, p),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "mean_prediction": float(p.mean()),
        "dna_rate": float(y.mean()),
    }


def band_rates(bands_, y, p):
    """Share of bookings and their DNA rate per band."""
    out = {}
    edges = [b["min_probability"] for b in bands_] + [math.inf]
    for b, lo, hi in zip(bands_, edges, edges[1:]):
        m = (p >= lo) & (p < hi)
        out[b["name"]] = {"share": float(m.mean()), "dna_rate": float(y[m].mean()) if m.any() else None}
    return out


def band_targets(bands_, rates, targets):
    """Compares the share of bookings at or above each targeted band with its target (the
    config's fractions); off when it differs from the target by more than half of it.
    targets: {band name: fraction of bookings at or above it}."""
    names = [b["name"] for b in bands_]
    out = []
    for name, target in targets.items():
        at_or_above = sum(rates[n]["share"] for n in names[names.index(name):])
        out.append({"band": name, "at_or_above": True, "target": target, "share": at_or_above,
                    "off_target": abs(at_or_above - target) > target / 2})
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


# Subgroups with fewer rows than this are shown without figures (small-number suppression:
# the card is shared between trusts); an AUC needs at least MIN_EACH of each outcome.
MIN_ROWS = 10
MIN_EACH = 5
AUC_GAP = 0.05
FLAG_RATIO = 2.0


def subgroup_table(groups, y, p, flagged):
    """The subgroup table: groups is a list of (attribute, {value label: boolean mask}) over
    the window's rows; flagged marks the bookings in the high band or above. Returns
    (rows, warnings)."""
    overall = float(roc_auc_score(y, p))
    total_dna, total_flagged = max(1, int(y.sum())), max(1, int(flagged.sum()))
    rows, warnings = [], []
    for attribute, values in groups:
        for label, m in values.items():
            n = int(m.sum())
            r = {"attribute": attribute, "group": label, "rows": n}
            if n < MIN_ROWS:
                r["suppressed"] = f"fewer than {MIN_ROWS} bookings"
                rows.append(r)
                continue
            yy, pp, ff = y[m], p[m], flagged[m]
            dnas = int(yy.sum())
            r.update(dna_rate=float(yy.mean()), observed_expected=float(yy.sum() / pp.sum()) if pp.sum() > 0 else None,
                     share_flagged=float(ff.mean()), share_of_all_flagged=float(ff.sum() / total_flagged),
                     share_of_all_dnas=float(dnas / total_dna), auc=None, auc_ci95=None)
            if min(dnas, n - dnas) >= MIN_EACH:
                ci = auc_ci(yy, pp)
                r["auc"], r["auc_ci95"] = ci["auc"], ci["ci95"]
            r["warnings"] = []
            if r["auc"] is not None and r["auc"] < overall - AUC_GAP:
                chance = "; its 95% CI reaches the overall AUC, so this may be chance" if r["auc_ci95"][1] >= overall else ""
                r["warnings"].append(f"AUC {r['auc']:.3f} (95% CI {r['auc_ci95'][0]:.3f}–{r['auc_ci95'][1]:.3f}) is more than "
                                     f"{AUC_GAP} below the overall {overall:.3f}{chance}")
            if r["share_of_all_flagged"] > FLAG_RATIO * r["share_of_all_dnas"] and ff.sum() > 0:
                r["warnings"].append(f"{r['share_of_all_flagged']:.1%} of the bookings flagged high are in this group, more than "
                                     f"{FLAG_RATIO:g}× its {r['share_of_all_dnas']:.1%} share of the DNAs")
            for w in r["warnings"]:
                warnings.append(f"{attribute} {label}: {w}")
            rows.append(r)
    return rows, warnings
