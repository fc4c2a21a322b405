"""The decision-time model (issue 13 item 10): rows as of the decision point, start - lead.

* make model AS_OF=decision on the simulator with --dna-since-booking: a model whose id says
  decision, whose card says its rows are as of the decision point, whose training rows are all
  stamped start - 24h, and whose flip check (outcomes after the cut-off flipped) changed no
  row as of a point at or before it.
* models/decision as committed: built that way at the default seed and size.
* make evaluate AS_OF=decision BOOKING_MODEL=models/default on a simulator CSV (another seed,
  --dna-since-booking): the decision-time scores rank the same appointments better than the
  booking-time ones beyond chance (paired DeLong), and on the default simulator (no effect
  after booking) they do not.
* refusals: BOOKING_MODEL without AS_OF=decision, an unknown AS_OF.
"""

import csv
import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, build_model, evaluate, need

DEFAULT = os.path.join(ROOT, "models", "default")
DECISION = os.path.join(ROOT, "models", "decision")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sim_csv(d, *flags):
    """A simulator CSV, seed 7 (the models' is 42), 6000 patients over a year."""
    subprocess.run(["go", "build", "-o", str(d), "./cmd/producer"], cwd=ROOT, check=True)
    env = dict(os.environ, DNA_PSEUDONYM_SECRET="training-only-not-a-secret-000000")
    subprocess.run([str(d / "producer"), "--source", "sim", "--seed", "7", "--patients", "6000", "--days", "365", *flags,
                    "--out", str(d / "events.jsonl")], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "training", "sim_to_csv.py"), str(d / "events.jsonl"), str(d / "sim.csv"),
                    "--bad-rows", "0"], check=True, capture_output=True)
    return d / "sim.csv"


def test_build_decision_model(tmp_path):
    res, out, work = build_model(tmp_path, "decision", PATIENTS=6000, DAYS=365, SEED=7, AS_OF="decision")
    assert res.returncode == 0, res.stderr
    assert "--dna-since-booking" in res.stderr
    card, contract = read_json(out / "card.json"), read_json(out / "contract.json")
    assert contract["model_id"].startswith("dna-gbm-decision-") and card["model_id"] == contract["model_id"]
    assert card["as_of"] == {"rows": "decision", "decision_lead_hours": 24}
    assert card["data"]["provenance"]["dna_since_booking"] == "true"
    summary = read_json(work / "summary.json")
    assert summary["as_of"] == "decision" and summary["left_out"]["booked_after_decision_point"] > 0
    assert "Decision-time model" in (out / "card.md").read_text()
    flip = read_json(work / "flip.json")
    assert flip["ok"] and sum(flip["changed_at_or_before_cut_off"].values()) == 0 and flip["rows_at_or_before_cut_off"] > 1000
    # Every row is as of its decision point: 24 hours before its appointment starts.
    with open(work / "trainset.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["training_rows"] > 10000
    lead = {dt.datetime.fromisoformat(r["appointment_start"].replace("Z", "+00:00"))
            - dt.datetime.fromisoformat(r["event_time"].replace("Z", "+00:00")) for r in rows}
    assert lead == {dt.timedelta(hours=24)}


def test_committed_decision_model():
    card, contract = read_json(os.path.join(DECISION, "card.json")), read_json(os.path.join(DECISION, "contract.json"))
    default = read_json(os.path.join(DEFAULT, "card.json"))
    assert contract["model_id"].startswith("dna-gbm-decision-") and card["as_of"]["rows"] == "decision"
    prov = card["data"]["provenance"]
    assert {k: prov[k] for k in ("seed", "patients", "days")} == {k: default["data"]["provenance"][k] for k in ("seed", "patients", "days")}
    assert prov["dna_since_booking"] == "true" and card["parity_max_abs_diff"] < 1e-9
    # The decision-time model ranks its test window better than the booking-time truth does:
    # it sees the DNAs recorded after the booking that the outcome draw used.
    assert card["auc"] > card["bayes_auc"]


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    need("go")
    d1, d2 = tmp_path_factory.mktemp("recency"), tmp_path_factory.mktemp("plain")
    return sim_csv(d1, "--dna-since-booking"), sim_csv(d2)


def test_auc_at_booking_vs_decision(tmp_path, csvs):
    recency, plain = csvs
    res, out = evaluate(tmp_path, "ev", MODEL=DECISION, AS_OF="decision", BOOKING_MODEL=DEFAULT, DATA=recency,
                        FROM="2025-06-01", TO="2026-01-01")
    assert res.returncode == 0, res.stderr
    ev = read_json(out / "evaluation.json")
    bvd = ev["booking_vs_decision"]
    print(f"recency world: AUC at booking {bvd['at_booking']['auc']:.4f} vs at decision {bvd['at_decision']['auc']:.4f}, "
          f"difference {bvd['auc_difference']:+.4f} ({bvd['auc_difference_ci95'][0]:+.4f} to {bvd['auc_difference_ci95'][1]:+.4f})")
    assert ev["as_of"] == {"rows": "decision", "decision_lead_hours": 24}
    assert bvd["at_booking"]["model_id"] == read_json(os.path.join(DEFAULT, "contract.json"))["model_id"]
    assert bvd["at_decision"]["model_id"] == ev["model_id"] and bvd["at_decision"]["auc"] == pytest.approx(ev["auc"], abs=1e-12)
    # A CSV has one booking per appointment, so every decision row has its booking row.
    assert bvd["appointments"] == ev["rows"] and bvd["decision_rows_without_booking_row"] == 0
    assert bvd["auc_difference"] == pytest.approx(bvd["at_decision"]["auc"] - bvd["at_booking"]["auc"], abs=1e-12)
    assert bvd["auc_difference_ci95"][0] > 0.005
    assert "AUC at booking vs at decision time" in res.stderr
    page = (out / "evaluation.html").read_text()
    assert 'id="booking-vs-decision-table"' in page and f"{bvd['auc_difference']:+.4f}" in page
    assert sorted(os.listdir(out)) == ["evaluation.html", "evaluation.json"]

    # Without the effect after booking, the later view adds nothing beyond chance.
    res, out = evaluate(tmp_path, "plain", MODEL=DECISION, AS_OF="decision", BOOKING_MODEL=DEFAULT, DATA=plain,
                        FROM="2025-06-01", TO="2026-01-01")
    assert res.returncode == 0, res.stderr
    bvd = read_json(out / "evaluation.json")["booking_vs_decision"]
    print(f"default world: difference {bvd['auc_difference']:+.4f} ({bvd['auc_difference_ci95'][0]:+.4f} to {bvd['auc_difference_ci95'][1]:+.4f})")
    assert bvd["auc_difference_ci95"][0] < 0.005


def test_refusals(tmp_path, csvs):
    recency, _ = csvs
    res, _ = evaluate(tmp_path, "a", MODEL=DECISION, BOOKING_MODEL=DEFAULT, DATA=recency)
    assert res.returncode != 0 and "BOOKING_MODEL needs AS_OF=decision" in res.stderr
    res, _ = evaluate(tmp_path, "b", MODEL=DECISION, AS_OF="appointment", DATA=recency)
    assert res.returncode != 0 and "AS_OF=appointment: want booking or decision" in res.stderr
    res, _, _ = build_model(tmp_path, "c", AS_OF="later")
    assert res.returncode != 0 and "AS_OF=later: want booking or decision" in res.stderr
