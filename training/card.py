"""Model card for people: PNG plots and card.md, from the card.json data train.py builds
(cardhtml.py writes the same as one self-contained card.html).

Every number here comes from the served model (trees, then the calibration table if one is
applied) on the test window, the latest appointments, which neither training nor the
validation decisions (early stopping, calibration, bands) saw. No figure is in-sample.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

PLOTS = {
    "roc": "roc.png",
    "calibration": "calibration.png",
    "importance": "importance.png",
    "contacts": "contacts.png",
}
# No timestamps or versions in the PNGs, so an unchanged model gives unchanged files.
META = {"Software": None}


def _save(fig, out, name):
    path = os.path.join(out, PLOTS[name])
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=META)
    plt.close(fig)
    return PLOTS[name]


def plots(out, card, y, p, truth, importance, efficacy):
    """Writes the four plots; returns {name: file}."""
    return {
        "roc": roc(out, card, y, p, truth),
        "calibration": calibration(out, card, y, p),
        "importance": importance_plot(out, importance),
        "contacts": contacts(out, card, y, p, truth, efficacy),
    }


def roc(out, card, y, p, truth, window="test window"):
    fig, ax = plt.subplots(figsize=(5.2, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, lw=2, label=f"model, AUC {card['auc']:.3f}")
    if truth is not None:
        fpr, tpr, _ = roc_curve(y, truth)
        ax.plot(fpr, tpr, lw=1.2, ls="--", color="black", label=f"true probability (simulator), AUC {card['bayes_auc']:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance, AUC 0.5")
    ax.set(xlabel="false positive rate (attenders flagged)", ylabel="true positive rate (DNAs flagged)",
           title=f"ROC, {window} ({len(y):,} bookings)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out, "roc")


def calibration(out, card, y, p, bins=10, window="test window"):
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    # The ECE bins: equal width.
    idx = np.minimum((p * bins).astype(int), bins - 1)
    mp, my, cnt = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            mp.append(p[m].mean())
            my.append(y[m].mean())
            cnt.append(m.sum())
    cnt = np.array(cnt)
    ax.scatter(mp, my, s=20 + 200 * cnt / cnt.max(), alpha=0.7, label=f"{bins} equal-width bins (ECE {card['ece']:.4f}); area ~ bookings")
    # Quantile bins show the crowded low-probability end.
    q = np.quantile(p, np.linspace(0, 1, 21))
    qi = np.clip(np.searchsorted(q, p, side="right") - 1, 0, 19)
    qp = [p[qi == b].mean() for b in range(20) if (qi == b).any()]
    qy = [y[qi == b].mean() for b in range(20) if (qi == b).any()]
    ax.plot(qp, qy, "s-", ms=3, lw=0.8, color="tab:orange", label="20 equal-count bins")
    top = max(0.05, float(np.quantile(p, 0.999)), max(my) if my else 0) * 1.1
    top = min(1.0, top)
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="perfect calibration")
    cal = card["calibration"]
    state = f"calibrated ({cal['method']})" if cal["applied"] else "not calibrated (see card)"
    ax.set(ylabel="observed DNA rate", title=f"Calibration, {window}: {state}", xlim=(0, top), ylim=(0, top))
    ax.legend(fontsize=7.5, loc="upper left")
    ax.grid(alpha=0.3)
    hx.hist(p, bins=np.linspace(0, top, 60), color="tab:blue", alpha=0.6)
    hx.set_yscale("log")
    hx.set(xlabel="predicted probability of DNA", ylabel="bookings")
    hx.grid(alpha=0.3)
    return _save(fig, out, "calibration")


def importance_plot(out, importance):
    names = [k for k, _ in importance][::-1]
    gains = np.array([v for _, v in importance][::-1], float)
    share = gains / gains.sum() if gains.sum() > 0 else gains
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(names) + 1.2))
    ax.barh(names, share * 100, color="tab:blue")
    ax.set(xlabel="share of total split gain (%)", title="Feature importance (LightGBM gain)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "importance")


def _curve(y, score, efficacy):
    order = np.argsort(-score, kind="stable")
    dna = np.cumsum(y[order])
    k = np.arange(1, len(y) + 1)
    per = np.where(dna > 0, k / (efficacy * np.maximum(dna, 1)), np.nan)
    return k / len(y), per, dna / max(1, y.sum())


def contacts(out, card, y, p, truth, efficacy):
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(11, 4.6))
    share, per, reached = _curve(y, p, efficacy)
    start = max(1, int(0.005 * len(y)))  # the first few contacts are too noisy to read
    ax.plot(share[start:] * 100, per[start:], lw=2, label="model")
    gx.plot(share * 100, reached * 100, lw=2, label="model")
    if truth is not None:
        s2, per2, r2 = _curve(y, truth, efficacy)
        ax.plot(s2[start:] * 100, per2[start:], lw=1.2, ls="--", color="black", label="true probability (simulator)")
        gx.plot(s2 * 100, r2 * 100, lw=1.2, ls="--", color="black", label="true probability (simulator)")
    base = y.mean()
    ax.axhline(1 / (efficacy * base), color="grey", ls=":", label=f"contact at random: {1 / (efficacy * base):.0f}")
    gx.plot([0, 100], [0, 100], color="grey", ls=":", label="contact at random")
    ytop = 1 / (efficacy * base) * 1.3
    rates = card["band_rates_test"]
    hi = (rates["high"]["share"] + rates["very_high"]["share"]) * 100
    vh = rates["very_high"]["share"] * 100
    for x, name in ((vh, "very high band"), (hi, "high + very high bands")):
        for a in (ax, gx):
            a.axvline(x, color="tab:red", lw=0.8, alpha=0.6)
        ax.text(x, ytop * 0.98, f" {name}", color="tab:red", fontsize=7, rotation=90, va="top", ha="right")
    ax.set(xlabel="bookings contacted, highest risk first (%)", ylabel="extra reminders per DNA prevented",
           title=f"Contacts per prevented DNA (reminder prevents {efficacy:.0%} of DNAs contacted)", xlim=(0, 100))
    ax.set_ylim(0, ytop)
    gx.set(xlabel="bookings contacted, highest risk first (%)", ylabel="DNAs among those contacted (% of all DNAs)",
           title="DNAs reached", xlim=(0, 100), ylim=(0, 100))
    for a in (ax, gx):
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower right" if a is gx else "upper right")
    return _save(fig, out, "contacts")


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def _f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def window_rows(card):
    """The windows table: (name, from, to, rows, DNA rate, what it was used for)."""
    w = card["windows"]
    used = {"train": "fitting the trees", "validation": "number of trees, calibration map, risk band thresholds",
            "test": "this card only"}
    return [(name, w[name]["from"], w[name]["to"], w[name]["rows"], w[name]["dna_rate"], used[name]) for name in ("train", "validation", "test")]


def leakage_lines(card):
    """What the leakage guard checked, as sentences."""
    lk = card["leakage"]
    s = lk["single_feature_auc"]
    top = sorted(((k, v) for k, v in s["auc"].items() if v is not None), key=lambda kv: -kv[1])[:3]
    out = [f"Each feature alone ({s['method']}): the highest are " + ", ".join(f"`{k}` {v:.3f}" for k, v in top)
           + f"; training stops at {s['limit']}."]
    g = lk.get("extra_auc_gain", {})
    if g.get("gain"):
        out.append("What each extra adds (" + g["method"] + f"; AUC with every feature {g['auc_with_every_feature']:.3f}): "
                   + ", ".join(f"`{k}` {v:+.3f}" for k, v in sorted(g["gain"].items(), key=lambda kv: -kv[1]))
                   + f"; training stops at {g['limit']}.")
    else:
        out.append("What each extra adds: no extras, nothing to check.")
    fc = lk["flip_check"]
    if fc["run"]:
        changed = ", ".join(f"`{c}` in {n:,} rows" for c, n in fc["changed_before"].items()) or "no value of any feature changed"
        out.append(f"Flip check (`cmd/trainset -flip-check`): the {fc['outcomes_flipped']:,} outcomes recorded after {fc['cut_off']} "
                   f"were flipped and the data replayed; in the {fc['rows_compared']:,} bookings made before then {changed} "
                   f"(while {fc['values_changed_after']:,} values changed in the {fc['later_rows']:,} later ones, as they should). "
                   "Extra columns are copied from the file as given, so the flip cannot show whether they were computed from later "
                   "outcomes: for them the single-feature check is the guard.")
        if fc.get("note"):
            out.append("Note: " + fc["note"] + ".")
    else:
        out.append("Flip check: not run (" + fc["note"] + ").")
    if lk["findings_allowed"]:
        out.append("Allowed by the config (`allow_leakage`): " + "; ".join(lk["findings_allowed"]) + ".")
    return out


def truncation_lines(card):
    t = card["windows"]["truncated_end"]
    if t.get("truncated"):
        wk = t["weeks"]
        return [f"**The end of the extract is truncated**: {len(wk)} week(s) of appointments from {t['from']} ({t['rows']:,} rows) "
                f"are unlike the reference ({'; '.join(wk[0]['reasons'])} in the first of them); they were {t['action']}."]
    if t.get("note"):
        return [f"Truncated end: not checked ({t['note']})."]
    r = t["reference"]
    return [f"The end of the extract is not truncated: the last week's appointments look like the reference "
            f"({_pct(r['short_notice_share'])} booked at short notice, median lead time {r['median_lead_days']:.0f} days, "
            f"{r['rows_per_day']:.0f} rows per day)."]


def subgroup_header():
    return ["attribute", "group", "bookings", "DNA rate", "AUC (95% CI)", "observed / expected", "flagged high",
            "share of all flagged", "share of all DNAs"]


def subgroup_cells(r):
    if r.get("suppressed"):
        return [r["attribute"], r["group"], f"{r['rows']:,}", r["suppressed"], "", "", "", "", ""]
    auc = "too few DNAs or attendances" if r["auc"] is None else f"{r['auc']:.3f} ({r['auc_ci95'][0]:.3f}–{r['auc_ci95'][1]:.3f})"
    return [r["attribute"], r["group"], f"{r['rows']:,}", _pct(r["dna_rate"]), auc, _f(r["observed_expected"], 2),
            _pct(r["share_flagged"]), _pct(r["share_of_all_flagged"]), _pct(r["share_of_all_dnas"])]


def markdown(out, card):
    t = card["test"]
    cal = card["calibration"]
    prov = card["data"]["provenance"] or {}
    ts = card["data"]["trainset"] or {}
    as_of = card.get("as_of") or {"rows": "booking"}
    lines = [f"# Model card: `{card['model_id']}`", ""]
    lines += [
        "A LightGBM gradient-boosted model of the probability that an outpatient booking ends in "
        "*did not attend* (DNA), scored " + ("on every booking and reschedule" if as_of["rows"] != "decision" else
                                             "as of the decision point, and when the patient's history changes,") + " by the Go consumer. "
        "Features are computed by the same Go code in training (replayed, point-in-time) and in serving. "
        "`card.html` beside this file is the same card for people who do not read Markdown.",
        "",
        f"* Trained {card['trained_at']} with LightGBM {card['lightgbm_version']}, {card['best_iteration']} trees "
        f"(early stopping on validation log loss), {len(card['features'])} features.",
    ]
    if as_of["rows"] == "decision":
        lines.append(f"* **Decision-time model**: each row's features are as of the decision point, "
                     f"{as_of.get('decision_lead_hours', 24):g} hours before the appointment start, with the patient's history "
                     "replayed up to it (`cmd/trainset -as-of decision`); appointments booked after their decision point "
                     "have no row. Served by `cmd/consumer --decision-model-dir` when a patient's history changes.")
    since = prov.get("dna_since_booking") == "true"
    if prov.get("source") == "simulator" and since:
        lines.append(f"* Data: the repository's PAS simulator (seed {prov.get('seed')}, {prov.get('patients')} patients, "
                     f"{prov.get('days')} booking days) with `--dna-since-booking`: DNAs recorded after a booking raise that "
                     "appointment's risk, so the Bayes AUC below (the booking-time truth on the same rows) is not a ceiling "
                     "for a model that sees them.")
    elif prov.get("source") == "simulator":
        lines.append(f"* Data: the repository's PAS simulator (seed {prov.get('seed')}, {prov.get('patients')} patients, "
                     f"{prov.get('days')} booking days). The simulator knows each booking's true DNA probability, so this "
                     "card can show the best AUC any model could reach on the same rows (Bayes AUC).")
    elif prov:
        lines.append("* Data: " + ", ".join(f"{k} `{v}`" for k, v in prov.items()) + ".")
    lines.append("")
    if card["warnings"]:
        lines += ["## Warnings", ""] + [f"* {w}" for w in card["warnings"]] + [""]
    lines += ["## Headline (test window)", "",
              "| | value |", "| --- | --- |",
              f"| AUC (95% CI, DeLong) | **{card['auc']:.4f}** ({card['auc_ci95'][0]:.4f}–{card['auc_ci95'][1]:.4f}) |"]
    if "bayes_auc" in card:
        gap = card["bayes_auc"] - card["auc"]
        truth = "booking-time probability" if since else "true probability"
        lines.append(f"| Bayes AUC (the simulator's {truth}, same rows) | **{card['bayes_auc']:.4f}** "
                     f"(model is {abs(gap):.4f} {'below' if gap >= 0 else 'above'}) |")
    else:
        lines.append("| Bayes AUC | not available: " + card["bayes_auc_note"] + " |")
    lines += [
        f"| ECE ({card['ece_bins']} equal-width bins) | **{card['ece']:.4f}** |",
        f"| Brier score / log loss | {t['brier']:.4f} / {t['log_loss']:.4f} |",
        f"| mean prediction / DNA rate | {_pct(t['mean_prediction'])} / {_pct(t['dna_rate'])} |",
        f"| Go scorer vs LightGBM, max abs difference over {card['parity']['rows']:,} synthetic rows | **{card['parity_max_abs_diff']:.3g}** |",
        "",
        "## Windows",
        "",
        "Split by **appointment date** (UK), whole days: a model is used on appointments still to come, so it is tested on the "
        "latest ones. Validation made every choice; the test window was used for nothing but this card, and no figure on "
        "the card is in-sample.",
        "",
        "| window | appointments from | to | rows | DNA rate | used for |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, a, b, n, rate, used in window_rows(card):
        lines.append(f"| {name} | {a} | {b} | {n:,} | {_pct(rate)} | {used} |")
    lines.append("")
    for k, v in card["windows"]["excluded"].items():
        lines.append(f"* Not used: {v['rows']:,} rows with appointments from {v['from']} ({k.replace('_', ' ')}).")
    lines += [""] + truncation_lines(card) + ["", f"Rule: {card['windows']['truncated_end']['rule']}", ""]
    lines += [f"![ROC]({card['plots']['roc']})", "", "## Calibration", "",
              ("**Applied**: " if cal["applied"] else "**Not applied**: ") + cal["decision"] + ".", ""]
    if cal["applied"]:
        lines.append(f"The map ({cal['method']}) is stored in `contract.json` as a piecewise-linear table and applied by the Go "
                     "scorer after the trees; the parity check covers it. On the test window the ECE is "
                     f"{card['ece']:.4f} as served ({cal['test_ece_uncalibrated']:.4f} for the trees alone).")
    else:
        extra = {k: v for k, v in cal.items() if k.startswith("test_ece_if_")}
        if extra:
            k, val = next(iter(extra.items()))
            lines.append(f"(For the record, on the test window: ECE {card['ece']:.4f} as served; {val:.4f} had "
                         f"{k[len('test_ece_if_'):-len('_applied')]} been applied.)")
    lines += ["", f"![calibration]({card['plots']['calibration']})", ""]
    b = card["config"]["bands"]
    lines += ["## Risk bands", "",
              "Thresholds from the served scores of the validation window, the latest appointments before the test window: "
              f"medium from the training DNA rate, high and very high at the top {b['high_fraction']:.0%} and "
              f"{b['very_high_fraction']:.0%}. Shares below are on the test window.",
              "", "| band | from probability | test bookings | test DNA rate |", "| --- | --- | --- | --- |"]
    for band in card["risk_bands"]:
        r = card["band_rates_test"][band["name"]]
        lines.append(f"| {band['name']} | {band['min_probability']:.4f} | {_pct(r['share'])} | {_pct(r['dna_rate'])} |")
    lines += ["", "| band or above | target | test share | |", "| --- | --- | --- | --- |"]
    for tg in card["band_targets_test"]:
        lines.append(f"| {tg['band']} | {_pct(tg['target'])} | {_pct(tg['share'])} | {'**off target** (by more than half)' if tg['off_target'] else 'on target'} |")
    eff = card["reminder_efficacy"]
    lines += ["", "## Contacts per prevented DNA", "",
              f"Framed as in Nelson et al. (npj Digital Medicine, 2019): contact the highest-risk bookings first with an extra "
              f"reminder that prevents {eff:.0%} of the DNAs among those contacted (`reminder_efficacy` in the config; "
              "the number scales as 1/efficacy). Test window:", "",
              "| bookings contacted | contacts | DNAs among them | share of all DNAs | DNAs prevented | contacts per prevented DNA |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in card["contacts_per_prevented_dna_test"]:
        lines.append(f"| {r['share_contacted']:.0%} | {r['contacts']:,} | {r['dnas_among_contacted']:,} | {_pct(r['share_of_dnas_reached'])} "
                     f"| {r['prevented_dnas']:.0f} | {r['contacts_per_prevented_dna']:.1f} |")
    lines += ["", f"Contacting at random needs {1 / (eff * t['dna_rate']):.1f} contacts per prevented DNA.", "",
              f"![contacts per prevented DNA]({card['plots']['contacts']})", ""]
    lines += ["## Subgroups (test window)", "",
              "Flagged high = in the high or very high band. A warning marks a group whose AUC is more than 0.05 below the "
              "overall AUC, or whose share of the flagged bookings is more than twice its share of the DNAs. Groups with "
              "fewer than 10 bookings are not shown. An attribute that itself predicts DNA (age, deprivation) cannot help "
              "rank bookings within one of its groups, so group AUCs are usually somewhat below the overall AUC.", "",
              "| " + " | ".join(subgroup_header()) + " | warning |", "|" + " --- |" * (len(subgroup_header()) + 1)]
    for r in card["subgroups_test"]:
        lines.append("| " + " | ".join(subgroup_cells(r)) + " | " + "; ".join(r.get("warnings", [])) + " |")
    for a in card["subgroups_absent"]:
        lines.append(f"\nNot in the table: {a}.")
    lines += ["", "## Leakage checks", ""] + [f"* {x}" for x in leakage_lines(card)] + [""]
    lines += ["## Features", "",
              "Model order; `specialty` and categorical extras are integer codes (missing = -1 in serving). "
              "An `extra.<key>` feature comes from `booking.extra` on the booking event (a CSV extra column).", "",
              "| feature | type | share of gain | |", "| --- | --- | --- | --- |"]
    total = sum(card["feature_importance_gain"].values()) or 1
    for f in sorted(card["features"], key=lambda f: -card["feature_importance_gain"].get(f["name"], 0)):
        state = "absent (always missing)" if f["name"] in card["features_absent"] else "constant" if f["name"] in card["features_constant"] else ""
        lines.append(f"| `{f['name']}` | {f['type']} | {100 * card['feature_importance_gain'].get(f['name'], 0) / total:.1f}% | {state} |")
    lines += ["", f"![feature importance]({card['plots']['importance']})", ""]
    if ts:
        lines += ["## Data", ""]
        if ts.get("csv"):
            c = ts["csv"]
            lines.append(f"* CSV rows: {c['rows']:,}; imported {c['imported']:,}; **bad {c['bad']:,}** (not used; each listed with "
                         "its line number and reason in `bad_rows.csv`).")
            for reason, k in sorted(c["bad_reasons"].items(), key=lambda kv: -kv[1]):
                lines.append(f"  * {k:,} × {reason}")
            if c.get("unused_extra_columns"):
                lines.append(f"* Extra columns in the file not used as features: {', '.join(c['unused_extra_columns'])} "
                             "(list them under `extras` in the training config to use them).")
        lo = ts.get("left_out", {})
        lines.append(f"* {ts['events']:,} events, {ts['patients']:,} patients, {ts['bookings_scored']:,} bookings scored; "
                     f"{ts['training_rows']:,} labelled rows ({ts['did_not_attend']:,} DNA, {ts['attended']:,} attended).")
        lines.append(f"* Not training rows: {lo.get('superseded_by_reschedule', 0):,} superseded by a reschedule, "
                     f"{lo.get('cancelled', 0):,} cancelled, {lo.get('no_outcome', 0):,} without an outcome yet, "
                     f"{lo.get('duplicate_booking', 0):,} duplicate bookings.")
        lines.append(f"* History retention {ts.get('history_retention_hours', 0) // 24} days (must equal the consumer's "
                     "`--history-retention`).")
        lines.append("")
    ps = card["parity_set"]
    lines += ["## What this folder holds", "",
              "No patient-level data: `parity.csv` holds made-up rows "
              f"({ps['synthetic']:,} drawn feature by feature from the training marginals, {ps['edge']:,} edge cases, "
              f"{ps['perturbed']:,} with values knocked out; {ps['dropped_equal_to_a_real_row']} drawn rows equal to a real one were "
              "dropped), and this card holds only aggregates over at least 10 bookings. See docs/model.md.", ""]
    lines += ["## Use and limits", "",
              "* Intended use: prioritising extra reminders or other support for bookings at higher risk of DNA. "
              "A score is not a judgement about a patient; do not use it to decide who is offered care, or to refuse, "
              "delay or deprioritise care.",
              "* Retrain when the booking population, reminder practice or PAS coding changes; check the calibration "
              "and band DNA rates on recent data before swapping a model in.",
              "* The model sees only what was known at booking time (the feature code is replayed point-in-time; "
              "see docs/model.md).", ""]
    with open(os.path.join(out, "card.md"), "w") as f:
        f.write("\n".join(lines))
