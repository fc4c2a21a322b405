"""make evaluate (training/evaluate.sh): a model directory scored on a trust's own CSV.

* models/default on a simulator-made CSV (another seed): the AUC is close to the card's, and
  only the appointments in [FROM, TO) are counted, while features come from the whole file.
* a model trained on a hand-made CSV, on its own test window: the evaluation reproduces the
  card's test figures (same rows, the Go scorer's probabilities); on another hand-made CSV
  whose sex column has text the model never saw: the contract's code list is used (M keeps its
  code, unseen text is missing), not one learned from the data, and a folder without a model
  card is evaluated without the comparison.
* refusals, with the reason: a column the model needs, an empty window, a window with one
  outcome, MODEL or DATA not given, TO not after FROM, a model the scorer refuses.
"""

import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

import handmade
from conftest import ROOT, build_model, evaluate, need

LONDON = ZoneInfo("Europe/London")
DEFAULT = os.path.join(ROOT, "models", "default")


def result(out):
    with open(out / "evaluation.json") as f:
        return json.load(f)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


def assert_aggregates_only(out, rows):
    """Only the two files, and no identifier or time of any CSV row in them."""
    assert sorted(os.listdir(out)) == ["evaluation.html", "evaluation.json"]
    blobs = [(out / f).read_text() for f in os.listdir(out)]
    for r in rows:
        for col in ("patient_id", "appointment_id", "booked_at", "appointment_start"):
            assert not any(r[col] in b for b in blobs), f"{col} {r[col]} of the CSV is in the evaluation"
    page = blobs[0] if blobs[0].startswith("<!DOCTYPE") else blobs[1]
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page and "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory):
    """A simulator CSV (seed 7, not the default model's 42) without spoiled rows."""
    need("go")
    d = tmp_path_factory.mktemp("sim")
    subprocess.run(["go", "build", "-o", str(d), "./cmd/producer"], cwd=ROOT, check=True)
    env = dict(os.environ, DNA_PSEUDONYM_SECRET="training-only-not-a-secret-000000")
    subprocess.run([str(d / "producer"), "--source", "sim", "--seed", "7", "--patients", "6000", "--days", "365",
                    "--out", str(d / "events.jsonl")], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "training", "sim_to_csv.py"), str(d / "events.jsonl"), str(d / "sim.csv"),
                    "--bad-rows", "0"], check=True, capture_output=True)
    with open(d / "sim.csv") as f:
        return d / "sim.csv", list(csv.DictReader(f))


def uk_date(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(LONDON).date().isoformat()


def test_default_model_on_simulator_csv(tmp_path, sim_csv):
    path, rows = sim_csv
    frm, to = "2025-06-01", "2025-12-01"
    res, out = evaluate(tmp_path, "ev", MODEL=DEFAULT, DATA=path, FROM=frm, TO=to)
    assert res.returncode == 0, res.stderr
    ev = result(out)
    with open(os.path.join(DEFAULT, "card.json")) as f:
        card = json.load(f)
    print(f"models/default on simulator seed 7, {frm} to {to}: AUC {ev['auc']:.4f} "
          f"(95% CI {ev['auc_ci95'][0]:.4f}-{ev['auc_ci95'][1]:.4f}), card {card['auc']:.4f}")
    assert ev["model_id"] == card["model_id"]
    assert abs(ev["auc"] - card["auc"]) < 0.04 and ev["auc_ci95"][0] < ev["auc"] < ev["auc_ci95"][1]
    assert ev["model_card"]["model_card_test"]["auc"] == card["auc"]
    assert abs(ev["model_card"]["auc_difference"] - (ev["auc"] - card["auc"])) < 1e-12
    assert 0.8 < ev["observed_expected"] < 1.25 and ev["ece"] < 0.02
    # Only the window's appointments (UK date in [FROM, TO)) with an outcome are counted.
    labelled = [r for r in rows if r["outcome"] in ("attended", "did_not_attend")]
    inside = [r for r in labelled if frm <= uk_date(r["appointment_start"]) < to]
    assert 0 < len(inside) < len(labelled) // 2
    assert ev["rows"] == len(inside) and ev["did_not_attend"] == sum(r["outcome"] == "did_not_attend" for r in inside)
    assert ev["data"]["labelled_rows"] == len(labelled) and ev["data"]["rows_in_file"] == len(rows) and ev["data"]["bad_rows"] == 0
    assert frm <= ev["window"]["first_appointment_date"] <= ev["window"]["last_appointment_date"] < to
    with open(path, "rb") as f:
        assert ev["data"]["sha256"] == hashlib.sha256(f.read()).hexdigest() and ev["data"]["file"] == "sim.csv"
    # Band shares add up, and the subgroup table covers the window.
    assert abs(sum(b["share"] for b in ev["band_rates"].values()) - 1) < 1e-9
    assert sum(b["rows"] for b in ev["band_rates"].values()) == ev["rows"]
    assert {t["band"] for t in ev["band_targets"]} == {"high", "very_high"}
    ages = [r for r in ev["subgroups"] if r["attribute"] == "age band"]
    assert sum(r["rows"] for r in ages) == ev["rows"]
    page = (out / "evaluation.html").read_text()
    first = page[page.index('id="summary"'):page.index("</section>")]
    assert f"We scored {ev['rows']:,} of our own appointments" in first and f"AUC {ev['auc']:.3f}" in first and f"{card['auc']:.3f}" in first
    assert_aggregates_only(out, rows[:200])


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("hand")
    path = d / "appointments.csv"
    rows = handmade.write(path, patients=900, seed=11)
    cfg = d / "config.json"
    cfg.write_text(json.dumps({"extras": {"distance_km": "numeric", "sex": "categorical"}, "sensitive": ["sex"]}))
    res, out, _ = build_model(d, "model", DATA=path, CONFIG=cfg)
    assert res.returncode == 0, res.stderr
    with open(out / "card.json") as f:
        return out, json.load(f), path, rows, cfg


def test_reproduces_the_cards_test_window(tmp_path, hand_model):
    model, card, path, rows, cfg = hand_model
    w = card["windows"]["test"]
    to = (dt.date.fromisoformat(w["to"]) + dt.timedelta(days=1)).isoformat()
    res, out = evaluate(tmp_path, "own", MODEL=model, DATA=path, CONFIG=cfg, FROM=w["from"], TO=to)
    assert res.returncode == 0, res.stderr
    ev = result(out)
    assert ev["rows"] == w["rows"]
    assert abs(ev["auc"] - card["auc"]) < 1e-6 and abs(ev["ece"] - card["ece"]) < 1e-6
    assert abs(ev["brier"] - card["test"]["brier"]) < 1e-9
    for name, r in card["band_rates_test"].items():
        assert abs(ev["band_rates"][name]["share"] - r["share"]) < 1e-9
    assert ev["model_card"]["auc_intervals_overlap"]
    sex = {r["group"]: r["rows"] for r in ev["subgroups"] if r["attribute"] == "sex"}
    assert sex == {r["group"]: r["rows"] for r in card["subgroups_test"] if r["attribute"] == "sex"}
    assert_aggregates_only(out, rows)


def test_uses_the_contracts_code_list(tmp_path, hand_model):
    """Another trust's file: sex is M or a text the model never saw (X). Learned from this file
    the list would be [m, x] (M = code 0); the contract's is [f, m], so M keeps code 1 and X
    is missing ("unknown" in the subgroup table)."""
    # Only the two serving files, as a model from elsewhere may come: no card to compare with.
    model = tmp_path / "bare-model"
    model.mkdir()
    for f in ("model.txt", "contract.json"):
        (model / f).write_bytes((hand_model[0] / f).read_bytes())
    cfg = hand_model[4]
    with open(model / "contract.json") as f:
        sex = next(x for x in json.load(f)["features"] if x["name"] == "extra.sex")
    assert sex["categories"] == ["f", "m"]
    path = tmp_path / "other.csv"
    rd = handmade.write(path, patients=600, seed=12)
    for i, r in enumerate(rd):
        r["sex"] = "M" if i % 3 else "X"
    write_csv(path, rd)
    res, out = evaluate(tmp_path, "other", MODEL=model, DATA=path, CONFIG=cfg)
    assert res.returncode == 0, res.stderr
    ev = result(out)
    groups = {r["group"]: r["rows"] for r in ev["subgroups"] if r["attribute"] == "sex"}
    labelled = [r for r in rd if r["outcome"] in ("attended", "did_not_attend")]
    assert groups == {"m": sum(r["sex"] == "M" for r in labelled), "unknown": sum(r["sex"] == "X" for r in labelled)}
    assert ev["rows"] == len(labelled) and ev["window"]["from"] is None
    assert 0.5 < ev["auc"] < 0.8
    assert ev["model_card"] is None and ev["band_targets"] == []
    assert "no figure of its own: the model folder has no model card" in (out / "evaluation.html").read_text()
    assert_aggregates_only(out, rd[:200])


def test_refusals(tmp_path, sim_csv, hand_model):
    sim, _ = sim_csv
    model = hand_model[0]
    res, out = evaluate(tmp_path, "nosex", MODEL=model, DATA=sim)
    assert res.returncode != 0 and not out.exists()
    assert f"the model {hand_model[1]['model_id']} needs the column(s) sex, which the file does not have" in res.stderr, res.stderr
    res, out = evaluate(tmp_path, "empty", MODEL=DEFAULT, DATA=sim, FROM="2030-01-01")
    assert res.returncode != 0 and not out.exists()
    assert "no labelled appointments in the window 2030-01-01 to the end" in res.stderr, res.stderr
    # A window with one outcome only: no AUC can be measured.
    one = tmp_path / "one-class.csv"
    rd = [dict(r) for r in hand_model[3]]
    for r in rd:
        if r["appointment_start"] >= "2024-12-01" and r["outcome"] == "did_not_attend":
            r["outcome"] = "attended"
    write_csv(one, rd)
    res, out = evaluate(tmp_path, "one", MODEL=model, DATA=one, FROM="2024-12-01")
    assert res.returncode != 0 and not out.exists()
    assert "0 did not attend" in res.stderr and "an AUC needs both outcomes" in res.stderr, res.stderr
    res, _ = evaluate(tmp_path, "nomodel", DATA=sim)
    assert res.returncode != 0 and "MODEL is not set" in res.stderr
    res, _ = evaluate(tmp_path, "nodata", MODEL=DEFAULT)
    assert res.returncode != 0 and "DATA is not set" in res.stderr
    res, _ = evaluate(tmp_path, "dates", MODEL=DEFAULT, DATA=sim, FROM="2025-06-01", TO="2025-06-01")
    assert res.returncode != 0 and "is not after FROM" in res.stderr
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for f in ("model.txt", "contract.json"):
        (bad / f).write_bytes((model / f).read_bytes())
    (bad / "model.txt").write_text((model / "model.txt").read_text() + "\n")  # no longer the contract's model_sha256
    res, out = evaluate(tmp_path, "refused", MODEL=bad, DATA=sim)
    assert res.returncode != 0 and not out.exists()
    assert "the scorer refuses this model" in res.stderr and "model_sha256" in res.stderr, res.stderr
