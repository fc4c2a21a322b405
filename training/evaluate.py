#!/usr/bin/env python3
"""Evaluate a model directory (trained anywhere) on a trust's own historical appointments.

training/evaluate.sh (`make evaluate`) runs cmd/trainset -csv DATA -model MODEL first: it
replays the WHOLE file point-in-time (history before the window counts, as it would have in
serving), reads the booking extras with the model's own code lists, and scores every
labelled row with the Go scorer (scoring.Model.Vector, Score and Band: the trees and the
contract's calibration, exactly what the consumer serves). This script keeps the rows whose
appointment (UK date) is in [--from, --to), measures them with metrics.py, and writes to --out:

  evaluation.json  model_id, the data file's name and SHA-256, the window, rows, DNA rate, AUC
                   with its DeLong 95% interval, ECE, Brier, observed / expected, band shares
                   and DNA rate per band (against the model card's band targets when it has
                   them), the subgroup table with the card's warnings, and the model card's
                   own test figures (card.json) beside ours, when the folder has a card
  evaluation.html  the same for people, one self-contained file (plots inline)

With --booking-trainset (evaluate.sh AS_OF=decision BOOKING_MODEL=DIR) the main rows are as of
each appointment's decision point (cmd/trainset -as-of decision) and the booking-time model's
rows as of each booking: evaluation.json's "booking_vs_decision" holds, on the window's
appointments that have both rows (the final booking version; those booked after their
decision point have no decision row), the AUC at booking and at decision time with their
DeLong intervals, and the difference with its paired DeLong interval.

Only aggregates are written: no row, identifier or date of a single appointment, and every
subgroup or band DNA rate covers at least metrics.MIN_ROWS bookings (the calibration plot's
sparse high-risk tail is shown as it is, as on the model card).

Usage:
  evaluate.py --trainset scored.csv --summary summary.json --model DIR --out DIR
              [--config config.json] [--from YYYY-MM-DD] [--to YYYY-MM-DD]
              [--data-name appointments.csv] [--data-sha256 HEX]
              [--booking-trainset booking_scored.csv --booking-model DIR]
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

import card as cardlib
import cardhtml
import train
import windows
from metrics import AUC_GAP, BINS, MIN_ROWS, auc_ci, auc_difference_ci, band_rates, band_targets, metrics, subgroup_table

# Observed / expected DNAs outside this range: the model's probabilities do not carry over.
OE_RANGE = (0.8, 1.25)


def log(msg):
    print(f"evaluate.py: {msg}", file=sys.stderr, flush=True)


def die(msg):
    sys.exit(f"evaluate.py: ERROR: {msg}")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sensitive_config(path):
    """The training config's "sensitive" list (and its checks); other keys are the model's
    business and are ignored here."""
    try:
        return train.load_config(path)
    except SystemExit as e:
        die(str(e).replace("train.py: ERROR: ", "CONFIG: "))


def window(df, date_from, date_to):
    """Rows whose appointment's UK date is in [date_from, date_to) (None: open)."""
    d = df[windows.DATE]
    m = np.ones(len(df), bool)
    if date_from:
        m &= (d >= windows.parse_date("FROM", date_from)).to_numpy()
    if date_to:
        m &= (d < windows.parse_date("TO", date_to)).to_numpy()
    return df[m]


def flagged_threshold(bands):
    """Flagged = the "high" band or above, as on the card; a model without one: its top band."""
    named = {b["name"]: b["min_probability"] for b in bands}
    return named.get("high", bands[-1]["min_probability"])


def bands_of(bands, y, p, served):
    """Share and DNA rate per band (metrics.band_rates), with the band's rows; a DNA rate over
    fewer than MIN_ROWS bookings is suppressed. The Go scorer's band of each row must be the one
    the thresholds give (a check that the bands here are the served ones)."""
    rates = band_rates(bands, y, p)
    edges = [b["min_probability"] for b in bands]
    ours = np.array([bands[i]["name"] for i in np.searchsorted(edges, p, side="right") - 1])
    if (ours != served).any():
        die(f"{int((ours != served).sum())} rows: the Go scorer's band differs from the contract's thresholds")
    for b in bands:
        r = rates[b["name"]]
        r["rows"] = int((served == b["name"]).sum())
        if r["rows"] < MIN_ROWS:
            r["dna_rate"] = None
            if r["rows"]:
                r["suppressed"] = f"fewer than {MIN_ROWS} bookings"
    return rates


def compare(ev, card):
    """Our figures beside the card's test-window figures."""
    if card is None:
        return None
    t = card.get("test", {})
    out = {
        "model_card_test": {"auc": card.get("auc"), "auc_ci95": card.get("auc_ci95"), "ece": card.get("ece"),
                            "brier": t.get("brier"), "dna_rate": t.get("dna_rate"), "mean_prediction": t.get("mean_prediction"),
                            "window": {k: card.get("windows", {}).get("test", {}).get(k) for k in ("from", "to", "rows")},
                            "band_rates": card.get("band_rates_test")},
        "auc_difference": ev["auc"] - card["auc"] if card.get("auc") is not None else None,
        "ece_difference": ev["ece"] - card["ece"] if card.get("ece") is not None else None,
    }
    if card.get("auc_ci95"):
        lo, hi = card["auc_ci95"]
        out["auc_intervals_overlap"] = not (ev["auc_ci95"][1] < lo or ev["auc_ci95"][0] > hi)
    return out


def booking_vs_decision(part, booking_df, booking_contract, contract, summary):
    """AUC at booking (booking_df: the booking-time model's rows) vs at decision time (part:
    this window's decision rows) on the appointments both have, paired by appointment and
    booking version."""
    keys = ["_appointment_id", "_booking_version"]
    both = part[keys + [train.LABEL, "served_probability"]].merge(
        booking_df[keys + [train.LABEL, "served_probability"]], on=keys, suffixes=("", "_booking"), validate="one_to_one")
    if (both[train.LABEL] != both[train.LABEL + "_booking"]).any():
        die("the booking-time and decision-time rows of one appointment have different outcomes: not the same file?")
    y = both[train.LABEL].to_numpy()
    p_b, p_d = both["served_probability_booking"].to_numpy(float), both["served_probability"].to_numpy(float)
    d = auc_difference_ci(y, p_b, p_d)
    if d is None or len(both) < MIN_ROWS:
        die(f"only {len(both)} appointments of the window have both a booking-time and a decision-time row "
            f"({int(y.sum())} did not attend): too few to compare AUCs")
    cb, cd = auc_ci(y, p_b), auc_ci(y, p_d)
    return {
        "appointments": len(both),
        "did_not_attend": int(y.sum()),
        "decision_rows_without_booking_row": len(part) - len(both),
        "decision_lead_hours": summary.get("decision_lead_hours"),
        "at_booking": {"model_id": booking_contract["model_id"], "auc": cb["auc"], "auc_ci95": cb["ci95"]},
        "at_decision": {"model_id": contract["model_id"], "auc": cd["auc"], "auc_ci95": cd["ci95"]},
        "auc_difference": d["difference"],
        "auc_difference_ci95": d["ci95"],
        "method": "paired DeLong on the same appointments (decision minus booking)",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainset", required=True, help="cmd/trainset -model output (served_probability, served_band)")
    ap.add_argument("--summary", required=True, help="cmd/trainset -summary JSON")
    ap.add_argument("--model", required=True, help="the model directory evaluated")
    ap.add_argument("--out", required=True, help="directory to write evaluation.json and evaluation.html into")
    ap.add_argument("--config", help="training-style config: its \"sensitive\" columns join the subgroup table")
    ap.add_argument("--from", dest="date_from", help="first appointment date (UK) in the window, YYYY-MM-DD")
    ap.add_argument("--to", dest="date_to", help="first appointment date (UK) after the window, YYYY-MM-DD (exclusive)")
    ap.add_argument("--data-name", default="", help="the data file's name, for the record")
    ap.add_argument("--data-sha256", default="", help="the data file's SHA-256, for the record")
    ap.add_argument("--booking-trainset", help="cmd/trainset -as-of booking -model BOOKING_MODEL output: compare AUC at booking "
                    "with this (decision-time) evaluation on the same appointments")
    ap.add_argument("--booking-model", help="the booking-time model directory of --booking-trainset")
    args = ap.parse_args()
    if bool(args.booking_trainset) != bool(args.booking_model):
        die("--booking-trainset and --booking-model go together")
    for name, v in (("FROM", args.date_from), ("TO", args.date_to)):
        if v:
            try:
                windows.parse_date(name, v)
            except ValueError as e:
                die(str(e))
    if args.date_from and args.date_to and args.date_to <= args.date_from:
        die(f"TO {args.date_to} is not after FROM {args.date_from} (TO is exclusive)")
    cfg = sensitive_config(args.config)
    contract = read_json(os.path.join(args.model, "contract.json"))
    card_path = os.path.join(args.model, "card.json")
    card = read_json(card_path) if os.path.exists(card_path) else None
    summary = read_json(args.summary)

    df, columns = train.read_trainset(args.trainset)
    if "served_probability" not in df.columns:
        die(f"{args.trainset} has no served_probability column: write it with cmd/trainset -model")
    for c in columns:
        df[c] = df[c].astype("float64")
    part = window(df, args.date_from, args.date_to)
    first, last = windows.day(df[windows.DATE].min()), windows.day(df[windows.DATE].max())
    span = f"{args.date_from or 'the start'} to {args.date_to or 'the end'} (TO exclusive)"
    if len(part) == 0:
        die(f"no labelled appointments in the window {span}: the file's run from {first} to {last}")
    y = part[train.LABEL].to_numpy()
    p = part["served_probability"].to_numpy(float)
    dnas = int(y.sum())
    if len(part) < MIN_ROWS or dnas == 0 or dnas == len(part):
        die(f"the window {span} has {len(part)} labelled appointments, {dnas} did not attend and {len(part) - dnas} attended: "
            f"an AUC needs both outcomes and these figures at least {MIN_ROWS} bookings; widen the window (the file's run from {first} to {last})")

    ev = metrics(y, p)
    ev["observed_expected"] = float(y.sum() / p.sum())
    bands = contract["risk_bands"]
    rates = bands_of(bands, y, p, part["served_band"].to_numpy(str))
    targets = []
    card_bands = (card or {}).get("config", {}).get("bands") or {}
    wanted = {n: card_bands[k] for n, k in (("high", "high_fraction"), ("very_high", "very_high_fraction"))
              if k in card_bands and n in rates}
    if wanted:
        targets = band_targets(bands, rates, wanted)
    groups, absent_groups = train.subgroups(cfg, part, summary.get("age_bands"), summary.get("categories") or {})
    sub_rows, sub_warnings = subgroup_table(groups, y, p, p >= flagged_threshold(bands))
    features = [f["name"] for f in contract["features"]]
    constant, absent = train.feature_status(part, features)
    cmp = compare(ev, card)
    as_of = summary.get("as_of", "booking")
    bvd = None
    if args.booking_trainset:
        if as_of != "decision":
            die("--booking-trainset compares with a decision-time evaluation: score --trainset with cmd/trainset -as-of decision")
        bdf, _ = train.read_trainset(args.booking_trainset)
        bvd = booking_vs_decision(part, bdf, read_json(os.path.join(args.booking_model, "contract.json")), contract, summary)

    warnings = []
    if cmp and cmp.get("auc_difference") is not None:
        c = cmp["model_card_test"]
        if ev["auc_ci95"][1] < c["auc_ci95"][0]:
            warnings.append(f"AUC {ev['auc']:.3f} (95% CI {ev['auc_ci95'][0]:.3f}–{ev['auc_ci95'][1]:.3f}) is below the model card's "
                            f"{c['auc']:.3f} ({c['auc_ci95'][0]:.3f}–{c['auc_ci95'][1]:.3f}) beyond chance: the model ranks these appointments "
                            "less well than its own test window; find out why before relying on the card's figures (a harder mix "
                            "of bookings can do it too; docs/model.md).")
        elif cmp["auc_difference"] < -AUC_GAP:
            warnings.append(f"AUC {ev['auc']:.3f} is more than {AUC_GAP} below the model card's {c['auc']:.3f}.")
    oe = ev["observed_expected"]
    if not OE_RANGE[0] <= oe <= OE_RANGE[1]:
        warnings.append(f"Observed / expected DNAs {oe:.2f}: the model predicts {ev['mean_prediction']:.1%} on average, "
                        f"{ev['dna_rate']:.1%} did not attend; its probabilities (and the bands set on them) do not carry over to "
                        "this trust without recalibration or retraining.")
    for t in targets:
        if t["off_target"]:
            warnings.append(f"{t['share']:.1%} of these appointments are in the {t['band']} band or above, against the card's "
                            f"target of {t['target']:.0%} (off by more than half): the band thresholds do not carry over.")
    warnings += ["Subgroup " + w for w in sub_warnings]
    if absent:
        warnings.append(f"Features the model uses that are always missing in this data: {', '.join(absent)} "
                        "(add the column to the CSV if the trust has it; see docs/csv.md).")
    csv_sum = summary.get("csv") or {}

    out = {
        "model_id": contract["model_id"],
        "model_dir": os.path.basename(os.path.normpath(args.model)),
        "model_calibrated": "calibration" in contract,
        "scored_by": "cmd/trainset -model: the Go scorer (scoring.Model.Vector, Score, Band), as served",
        "data": {"file": args.data_name, "sha256": args.data_sha256, "rows_in_file": csv_sum.get("rows"),
                 "bad_rows": csv_sum.get("bad"), "bad_reasons": csv_sum.get("bad_reasons"),
                 "labelled_rows": len(df), "appointments_from": first, "appointments_to": last,
                 "left_out": summary.get("left_out"), "time_zone": summary.get("time_zone"),
                 "date_only_time": summary.get("date_only_time"),
                 "history_retention_hours": summary.get("history_retention_hours")},
        "window": {"from": args.date_from, "to_exclusive": args.date_to,
                   "first_appointment_date": windows.day(part[windows.DATE].min()),
                   "last_appointment_date": windows.day(part[windows.DATE].max()),
                   "features": "point in time, from the whole file (history before the window counts)"},
        "as_of": {"rows": as_of, **({"decision_lead_hours": summary.get("decision_lead_hours")} if as_of == "decision" else {})},
        "booking_vs_decision": bvd,
        "rows": len(part),
        "did_not_attend": dnas,
        "dna_rate": ev["dna_rate"],
        "auc": ev["auc"],
        "auc_ci95": ev["auc_ci95"],
        "ece": ev["ece"],
        "ece_bins": BINS,
        "brier": ev["brier"],
        "log_loss": ev["log_loss"],
        "mean_prediction": ev["mean_prediction"],
        "observed_expected": oe,
        "risk_bands": bands,
        "band_rates": rates,
        "band_targets": targets,
        "subgroups": sub_rows,
        "subgroups_absent": absent_groups,
        "features_absent": absent,
        "features_constant": constant,
        "model_card": cmp,
        "warnings": warnings,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "evaluation.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    with tempfile.TemporaryDirectory() as plots:
        calib = {"applied": out["model_calibrated"], "method": (contract.get("calibration") or {}).get("method")}
        out["plots"] = {"roc": cardlib.roc(plots, out, y, p, None, window="these appointments"),
                        "calibration": cardlib.calibration(plots, dict(out, calibration=calib), y, p, window="these appointments")}
        write_html(args.out, plots, out)
    for w in warnings:
        log("WARNING: " + w)
    vs = f" (model card: {card['auc']:.4f})" if card and card.get("auc") is not None else " (no model card)"
    log(f"{contract['model_id']} on {len(part):,} appointments {out['window']['first_appointment_date']} to "
        f"{out['window']['last_appointment_date']}: AUC {ev['auc']:.4f} (95% CI {ev['auc_ci95'][0]:.4f}-{ev['auc_ci95'][1]:.4f}){vs}, "
        f"ECE {ev['ece']:.4f}, Brier {ev['brier']:.4f}, DNA rate {ev['dna_rate']:.2%}, O/E {oe:.2f}, {len(warnings)} warning(s)")
    if bvd:
        b, d = bvd["at_booking"], bvd["at_decision"]
        log(f"AUC at booking vs at decision time on the same {bvd['appointments']:,} appointments: "
            f"{b['auc']:.4f} ({b['auc_ci95'][0]:.4f}-{b['auc_ci95'][1]:.4f}, {b['model_id']}) vs "
            f"{d['auc']:.4f} ({d['auc_ci95'][0]:.4f}-{d['auc_ci95'][1]:.4f}, {d['model_id']}); difference "
            f"{bvd['auc_difference']:+.4f} (paired 95% CI {bvd['auc_difference_ci95'][0]:+.4f} to {bvd['auc_difference_ci95'][1]:+.4f})")


def headline(ev):
    """The plain-language first paragraph."""
    w = ev["window"]
    c = (ev["model_card"] or {}).get("model_card_test")
    lo, hi = ev["auc_ci95"]
    s = (f"We scored {ev['rows']:,} of our own appointments from {w['first_appointment_date']} to {w['last_appointment_date']} "
         f"with model {ev['model_id']}: AUC {ev['auc']:.3f} (95% confidence interval {lo:.3f} to {hi:.3f}) against ")
    if c and c.get("auc") is not None:
        s += (f"{c['auc']:.3f} ({c['auc_ci95'][0]:.3f} to {c['auc_ci95'][1]:.3f}) on the data it was trained on "
              f"(its held-out test window, {c['window']['rows']:,} appointments from {c['window']['from']} to {c['window']['to']}).")
    else:
        s += "no figure of its own: the model folder has no model card (card.json) to compare with."
    s += (f" Given one appointment that was missed and one that was attended, it gives the missed one the higher risk "
          f"{ev['auc']:.0%} of the time (0.5 would be guessing). {cardlib._pct(ev['dna_rate'])} of our appointments were missed; "
          f"the model predicted {cardlib._pct(ev['mean_prediction'])} on average (observed / expected {ev['observed_expected']:.2f}).")
    return s


def write_html(out, plots, ev):
    esc, table, pct = cardhtml.esc, cardhtml.table, cardlib._pct
    c = (ev["model_card"] or {}).get("model_card_test")
    parts = [f"<h1>Evaluation of <code>{esc(ev['model_id'])}</code> on our own appointments</h1>",
             f'<section class="summary" id="summary"><p>{esc(headline(ev))}</p></section>',
             '<section class="notfor" id="not-for"><p><b>What it must not be used for.</b> Deciding who is offered care, or '
             "refusing, delaying or deprioritising anyone's care. Use a risk score only to offer more help to attend, and check the "
             "subgroup table below first.</p></section>"]
    if ev["warnings"]:
        parts.append('<section class="warnings" id="warnings"><h2>Warnings</h2><ul>'
                     + "".join(f"<li>{esc(w)}</li>" for w in ev["warnings"]) + "</ul></section>")
    else:
        parts.append('<section id="warnings"><p>No warnings.</p></section>')

    def row(name, ours, theirs):
        return (name, ours, theirs if c else "no model card")
    lo, hi = ev["auc_ci95"]
    head = [row("AUC (95% CI, DeLong)", f"{ev['auc']:.4f} ({lo:.4f}–{hi:.4f})",
                c and f"{c['auc']:.4f} ({c['auc_ci95'][0]:.4f}–{c['auc_ci95'][1]:.4f})"),
            row(f"Calibration error (ECE, {ev['ece_bins']} bins)", f"{ev['ece']:.4f}", c and cardlib._f(c["ece"], 4)),
            row("Brier score", f"{ev['brier']:.4f}", c and cardlib._f(c["brier"], 4)),
            row("DNA rate", pct(ev["dna_rate"]), c and pct(c["dna_rate"])),
            row("Mean predicted risk", pct(ev["mean_prediction"]), c and pct(c["mean_prediction"])),
            row("Observed / expected DNAs", f"{ev['observed_expected']:.2f}", ""),
            row("Appointments", f"{ev['rows']:,}", c and f"{c['window']['rows']:,}")]
    parts += ['<h2 id="performance">How well it ranks and how well calibrated</h2>',
              table(["measure", "our appointments", "model card (its test window)"], head, 'id="headline"'),
              cardhtml.img(plots, ev["plots"]["roc"], "ROC curve on our appointments"),
              cardhtml.img(plots, ev["plots"]["calibration"], "Calibration on our appointments")]
    bvd = ev.get("booking_vs_decision")
    if bvd:
        b, d = bvd["at_booking"], bvd["at_decision"]
        lo_d, hi_d = bvd["auc_difference_ci95"]
        parts += ['<h2 id="booking-vs-decision">AUC at booking vs at decision time</h2>',
                  f"<p>The same {bvd['appointments']:,} appointments scored as of their booking and as of the decision point, "
                  f"{bvd['decision_lead_hours']:g} hours before the start (history up to then).</p>",
                  table(["scored", "model", "AUC (95% CI, DeLong)"],
                        [("at booking", b["model_id"], f"{b['auc']:.4f} ({b['auc_ci95'][0]:.4f}–{b['auc_ci95'][1]:.4f})"),
                         ("at decision time", d["model_id"], f"{d['auc']:.4f} ({d['auc_ci95'][0]:.4f}–{d['auc_ci95'][1]:.4f})"),
                         ("difference (paired)", "", f"{bvd['auc_difference']:+.4f} ({lo_d:+.4f} to {hi_d:+.4f})")],
                        'id="booking-vs-decision-table"')]

    card_rates = (c or {}).get("band_rates") or {}
    brows = [(b["name"], f"{b['min_probability']:.4f}", pct(ev["band_rates"][b["name"]]["share"]),
              pct(ev["band_rates"][b["name"]]["dna_rate"]) if ev["band_rates"][b["name"]]["dna_rate"] is not None
              else ev["band_rates"][b["name"]].get("suppressed", "–"),
              pct(card_rates.get(b["name"], {}).get("share")), pct(card_rates.get(b["name"], {}).get("dna_rate")))
             for b in ev["risk_bands"]]
    parts += ['<h2 id="bands">Risk bands</h2>',
              table(["band", "from probability", "our share", "our DNA rate", "card share", "card DNA rate"], brows, 'id="band-table"')]
    if ev["band_targets"]:
        parts.append(table(["band", "card's target share", "our share", ""],
                           [(t["band"] + " or above", pct(t["target"]), pct(t["share"]), "off target" if t["off_target"] else "on target")
                            for t in ev["band_targets"]], 'id="band-targets"',
                           row_class=["warn" if t["off_target"] else "" for t in ev["band_targets"]]))

    sub = ev["subgroups"]
    parts += ['<h2 id="subgroups-heading">Who is flagged: subgroups</h2>',
              "<p>Flagged high means in the high or very high band. A row is highlighted when the group's AUC is more than 0.05 "
              "below the overall AUC, or its share of the flagged bookings is more than twice its share of the DNAs. Groups "
              f"with fewer than {MIN_ROWS} bookings are not shown.</p>",
              table(cardlib.subgroup_header() + ["warning"], [cardlib.subgroup_cells(r) + ["; ".join(r.get("warnings", []))] for r in sub],
                    'id="subgroups"', row_class=["warn" if r.get("warnings") else "" for r in sub], numeric=(2, 3, 5, 6, 7, 8))]
    if ev["subgroups_absent"]:
        parts.append("<p>Not in the table: " + "; ".join(esc(a) for a in ev["subgroups_absent"]) + ".</p>")

    d, w = ev["data"], ev["window"]
    facts = [("file", d["file"]), ("SHA-256", d["sha256"]), ("rows in the file", d["rows_in_file"]),
             ("bad rows (not used)", d["bad_rows"]), ("labelled appointments in the file", d["labelled_rows"]),
             ("appointments in the file", f"{d['appointments_from']} to {d['appointments_to']}"),
             ("window (appointment dates, UK)", f"{w['from'] or 'start of file'} to {w['to_exclusive'] or 'end of file'} (to exclusive)"),
             ("features", w["features"]), ("scored by", ev["scored_by"]),
             ("features always missing in the window", ", ".join(ev["features_absent"]) or "none"),
             ("features with one value in the window", ", ".join(ev["features_constant"]) or "none")]
    parts += ['<h2 id="data">The data</h2>', table(["", ""], facts, 'id="data-table"'),
              "<p>This folder holds only aggregates: no row, identifier or date of a single appointment; the tables suppress subgroup "
              f"and band figures over fewer than {MIN_ROWS} bookings (the plots show the sparse high-risk tail as it is). "
              "The same evaluation as data: evaluation.json.</p>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Evaluation of {esc(ev['model_id'])}</title><style>{cardhtml.CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    with open(os.path.join(out, "evaluation.html"), "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
