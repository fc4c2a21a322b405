"""card.html: the model card as one self-contained page for a service manager.

Plain language first (what it predicts, how well, what it must not be used for), then the
figures a reviewer checks: AUC with its 95% interval, calibration, contacts per prevented
DNA, the subgroup table, bands, windows, leakage checks and features. The plots are inlined as
data: URIs and there are no scripts or external links, so the file can be emailed or
attached to a governance paper as it is. Everything comes from card.json.
"""

import base64
import html
import os

from card import _pct, leakage_lines, subgroup_cells, subgroup_header, truncation_lines, window_rows

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Arial,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#212b32;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #005eb8;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d8dde0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f4f5}td.n{text-align:right}tr.warn td{background:#fff4e5}
.summary{background:#e8f1fa;border-left:6px solid #005eb8;padding:.6rem 1rem}
.notfor{background:#fde8e8;border-left:6px solid #d5281b;padding:.6rem 1rem}
.warnings{background:#fff4e5;border-left:6px solid #ffb81c;padding:.6rem 1rem}
img{max-width:100%;height:auto}code{background:#f0f4f5;padding:0 .2rem}small{color:#4c6272}
"""


def esc(x):
    return html.escape(str(x), quote=True)


def img(out, name, alt):
    with open(os.path.join(out, name), "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header, rows, attrs="", row_class=None, numeric=()):
    h = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="n">{esc(c)}</td>' if j in numeric else f"<td>{esc(c)}</td>" for j, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table {attrs}><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def summary(card):
    """The plain-language summary: three short paragraphs."""
    t, w = card["test"], card["windows"]["test"]
    lo, hi = card["auc_ci95"]
    rates = card["band_rates_test"]
    flagged = rates["high"]["share"] + rates["very_high"]["share"]
    flagged_dna = ((rates["high"]["dna_rate"] or 0) * rates["high"]["share"] + (rates["very_high"]["dna_rate"] or 0) * rates["very_high"]["share"]) / flagged if flagged else None
    tenth = next((r for r in card["contacts_per_prevented_dna_test"] if r["share_contacted"] == 0.10), None)
    as_of = card.get("as_of") or {"rows": "booking"}
    when = ("when the appointment is booked or moved, from what the hospital knew at that moment"
            if as_of["rows"] != "decision" else
            f"{as_of.get('decision_lead_hours', 24):g} hours before the appointment (the decision point for an extra reminder), "
            "and again when the patient's history changes, from what the hospital knew at that moment (a decision-time model: "
            "it was trained on appointments as they stood at their decision point)")
    what = ("<p><b>What it predicts.</b> For each booked outpatient appointment, the chance that the patient will not attend "
            f"and not cancel (a DNA, \"did not attend\"). It is worked out {when}: how far ahead it was booked, the specialty, "
            "the day and hour, the patient's age band and how deprived their area is, and their "
            "earlier attendances, DNAs and cancellations.</p>")
    how = (f"<p><b>How well.</b> It was tested on {w['rows']:,} appointments from {esc(w['from'])} to {esc(w['to'])} that it never "
           f"saw while it was built. Given one appointment that was missed and one that was attended, it gives the missed one the "
           f"higher risk {card['auc']:.0%} of the time (AUC {card['auc']:.3f}, 95% confidence interval {lo:.3f} to {hi:.3f}; "
           f"0.5 would be guessing). {_pct(t['dna_rate'])} of these appointments were missed; the model predicted "
           f"{_pct(t['mean_prediction'])} on average.")
    if flagged_dna is not None:
        how += f" It flagged {_pct(flagged)} of them as high risk, and {_pct(flagged_dna)} of those were missed."
    if tenth:
        how += (f" Sending an extra reminder to the top 10% would take about {tenth['contacts_per_prevented_dna']:.0f} reminders "
                f"per DNA prevented, if a reminder prevents {card['reminder_efficacy']:.0%} of DNAs (at random: "
                f"{1 / (card['reminder_efficacy'] * t['dna_rate']):.0f}).")
    how += "</p>"
    notfor = ("<p><b>What it must not be used for.</b> Deciding who is offered care, or refusing, delaying or deprioritising "
              "anyone's care. A risk score describes bookings like this one, not the person: use it only to offer more help to "
              "attend (an extra reminder, a call, transport or a more convenient time). Check the subgroup table below before "
              "use, and again on your own recent appointments.</p>")
    return f'<section class="summary" id="summary">{what}{how}</section><section class="notfor" id="not-for">{notfor}</section>'


def write(out, card):
    cal = card["calibration"]
    parts = [f"<h1>Model card: <code>{esc(card['model_id'])}</code></h1>",
             f"<p><small>Trained {esc(card['trained_at'])}; LightGBM {esc(card['lightgbm_version'])}; "
             f"{card['best_iteration']} trees; {len(card['features'])} features. The same card as data: card.json.</small></p>",
             summary(card)]
    if card["warnings"]:
        parts.append('<section class="warnings" id="warnings"><h2>Warnings</h2><ul>'
                     + "".join(f"<li>{esc(w)}</li>" for w in card["warnings"]) + "</ul></section>")
    else:
        parts.append('<section id="warnings"><p>No warnings.</p></section>')

    lo, hi = card["auc_ci95"]
    head = [("AUC (95% CI, DeLong)", f"{card['auc']:.4f} ({lo:.4f}–{hi:.4f})")]
    if "bayes_auc" in card:
        if (card["data"]["provenance"] or {}).get("dna_since_booking") == "true":
            head.append(("Bayes AUC: the simulator's booking-time probabilities on the same rows (DNAs after the booking also "
                         "raise the risk here, so a later score can beat it)", f"{card['bayes_auc']:.4f}"))
        else:
            head.append(("Bayes AUC: the simulator's true probabilities on the same rows, the best any model could do", f"{card['bayes_auc']:.4f}"))
    else:
        head.append(("Bayes AUC", "not available: " + card["bayes_auc_note"]))
    t = card["test"]
    head += [(f"Calibration error (ECE, {card['ece_bins']} bins)", f"{card['ece']:.4f}"),
             ("Mean predicted risk / observed DNA rate", f"{_pct(t['mean_prediction'])} / {_pct(t['dna_rate'])}"),
             ("Go scorer against LightGBM, largest difference", f"{card['parity_max_abs_diff']:.3g} over {card['parity']['rows']:,} synthetic rows")]
    parts += ['<h2 id="performance">How well it ranks: AUC</h2>', table(["measure (test window)", "value"], head, 'id="headline"'),
              img(out, card["plots"]["roc"], "ROC curve on the test window")]

    cal_text = ("A calibration map is applied: " if cal["applied"] else "No calibration map is applied: ") + cal["decision"] + "."
    parts += ['<h2 id="calibration">Does a 20% risk mean 20%? Calibration</h2>', f"<p>{esc(cal_text)}</p>",
              "<p>Each candidate was measured out of fold on the validation window; the chosen map is measured on the test window. "
              "No figure here is in-sample.</p>", img(out, card["plots"]["calibration"], "Calibration on the test window")]

    eff = card["reminder_efficacy"]
    rows = [(f"{r['share_contacted']:.0%}", f"{r['contacts']:,}", f"{r['dnas_among_contacted']:,}", _pct(r["share_of_dnas_reached"]),
             f"{r['prevented_dnas']:.0f}", f"{r['contacts_per_prevented_dna']:.1f}") for r in card["contacts_per_prevented_dna_test"]]
    parts += ['<h2 id="contacts">Contacts per prevented DNA</h2>',
              f"<p>Contact the highest-risk bookings first with an extra reminder that prevents {eff:.0%} of the DNAs among those "
              f"contacted (<code>reminder_efficacy</code> in the training config). At random it takes "
              f"{1 / (eff * t['dna_rate']):.1f} contacts per prevented DNA.</p>",
              table(["bookings contacted", "contacts", "DNAs among them", "share of all DNAs", "DNAs prevented", "contacts per prevented DNA"],
                    rows, 'id="contacts-table"', numeric=range(6)),
              img(out, card["plots"]["contacts"], "Contacts per prevented DNA")]

    sub = card["subgroups_test"]
    parts += ['<h2 id="subgroups-heading">Who is flagged: subgroups (test window)</h2>',
              "<p>Flagged high means in the high or very high band. A row is highlighted when the group's AUC is more than 0.05 "
              "below the overall AUC, or its share of the flagged bookings is more than twice its share of the DNAs. Groups "
              "with fewer than 10 bookings are not shown. Observed / expected is DNAs over the sum of predicted risks: above 1 "
              "the model under-predicts for the group. An attribute that itself predicts DNA (age, deprivation) cannot help "
              "rank bookings within one of its groups, so group AUCs are usually somewhat below the overall AUC.</p>",
              table(subgroup_header() + ["warning"], [subgroup_cells(r) + ["; ".join(r.get("warnings", []))] for r in sub],
                    'id="subgroups"', row_class=["warn" if r.get("warnings") else "" for r in sub], numeric=(2, 3, 5, 6, 7, 8))]
    if card["subgroups_absent"]:
        parts.append("<p>Not in the table: " + "; ".join(esc(a) for a in card["subgroups_absent"]) + ".</p>")

    b = card["config"]["bands"]
    band_rows = [(x["name"], f"{x['min_probability']:.4f}", _pct(card["band_rates_test"][x["name"]]["share"]),
                  _pct(card["band_rates_test"][x["name"]]["dna_rate"])) for x in card["risk_bands"]]
    target_rows = [(tg["band"] + " or above", _pct(tg["target"]), _pct(tg["share"]), "off target" if tg["off_target"] else "on target")
                   for tg in card["band_targets_test"]]
    parts += ['<h2 id="bands">Risk bands</h2>',
              f"<p>Thresholds set on the validation window (the latest appointments before the test window): high and very high "
              f"for the top {b['high_fraction']:.0%} and {b['very_high_fraction']:.0%}. On the test window:</p>",
              table(["band", "from probability", "bookings", "DNA rate"], band_rows, 'id="band-table"'),
              table(["band", "target share", "test share", ""], target_rows, 'id="band-targets"',
                    row_class=["warn" if tg["off_target"] else "" for tg in card["band_targets_test"]])]

    parts += ['<h2 id="windows">Data windows</h2>',
              "<p>Split by appointment date, so the test is on the latest appointments.</p>",
              table(["window", "appointments from", "to", "rows", "DNA rate", "used for"],
                    [(n, a, z, f"{r:,}", _pct(d), u) for n, a, z, r, d, u in window_rows(card)], 'id="window-table"', numeric=(3, 4))]
    for k, v in card["windows"]["excluded"].items():
        parts.append(f"<p>Not used: {v['rows']:,} rows with appointments from {esc(v['from'])} ({esc(k.replace('_', ' '))}).</p>")
    parts += [f"<p>{esc(x).replace('**', '')}</p>" for x in truncation_lines(card)]
    parts.append(f"<p><small>Rule: {esc(card['windows']['truncated_end']['rule'])}</small></p>")

    parts += ['<h2 id="leakage">Leakage checks</h2><ul>'] + [f"<li>{esc(x).replace('`', '')}</li>" for x in leakage_lines(card)] + ["</ul>"]

    total = sum(card["feature_importance_gain"].values()) or 1
    feats = sorted(card["features"], key=lambda f: -card["feature_importance_gain"].get(f["name"], 0))
    frows = [(f["name"], f["type"], f"{100 * card['feature_importance_gain'].get(f['name'], 0) / total:.1f}%",
              "absent (always missing)" if f["name"] in card["features_absent"] else "constant" if f["name"] in card["features_constant"] else "")
             for f in feats]
    parts += ['<h2 id="features">Features</h2>',
              "<p>Constant or absent features cannot help the model; they are marked.</p>",
              table(["feature", "type", "share of gain", "state"], frows, 'id="feature-table"',
                    row_class=["warn" if r[3] else "" for r in frows]),
              img(out, card["plots"]["importance"], "Feature importance")]
    ps = card["parity_set"]
    parts += ['<h2 id="folder">What the model folder holds</h2>',
              f"<p>No patient-level data. parity.csv holds {ps['rows']:,} made-up rows (drawn feature by feature from the training "
              "data's distributions, plus edge cases); this card holds only aggregates over at least 10 bookings.</p>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Model card {esc(card['model_id'])}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    with open(os.path.join(out, "card.html"), "w") as f:
        f.write(page)
