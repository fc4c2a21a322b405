"""make model end to end (training/build_model.sh): on the simulator and on a hand-made CSV.

* simulator: the test AUC is within 0.01 of the Bayes AUC on the same rows; the windows are by
  appointment date and the simulator's end (bookings stop, appointments go on) is found and
  left out; every check the card lists ran.
* both: reference.json is the test window's rows binned by the documented rule (test_reference).
* hand-made CSV: the model folder holds no row of the CSV; the subgroup table has sex (a
  declared sensitive column); a leaky column stops training, naming it, unless allowed.
"""

import csv
import json
import os

import pandas as pd
import pytest

import handmade
from conftest import build_model
from test_reference import check_built

FEATURES_START = 4  # trainset.csv: appointment_id, booking_version, event_time, appointment_start


def card_of(out):
    with open(out / "card.json") as f:
        return json.load(f)


def parity_rows(out):
    return pd.read_csv(out / "parity.csv", keep_default_na=False, na_values=[""])


def trainset_features(work, names):
    df = pd.read_csv(work / "trainset.csv", header=0, keep_default_na=False, na_values=[""])
    df = df.iloc[:, FEATURES_START:-2]
    df.columns = [c.split(".", 1)[0] if c.startswith("booking_version.") else c for c in df.columns]
    return df[names]


def assert_no_real_row(out, work):
    p = parity_rows(out)
    names = list(p.columns[1:-1])
    real = trainset_features(work, names)
    key = lambda d: {tuple(r) for r in d.astype(float).fillna(-1e300).itertuples(index=False)}  # noqa: E731
    assert not key(real) & key(p[names]), "a parity row equals a training-set row"


def assert_card_html(out, card):
    page = (out / "card.html").read_text()
    assert page.index('id="summary"') < page.index('id="not-for"') < page.index('id="performance"') < page.index('id="subgroups"')
    assert "deciding who is offered care" in page.lower() or "Deciding who is offered care" in page
    assert page.count("data:image/png;base64,") == 4 and "http://" not in page and "https://" not in page and "<script" not in page
    assert f"{card['auc']:.4f} ({card['auc_ci95'][0]:.4f}" in page


def test_simulator(tmp_path):
    res, out, work = build_model(tmp_path, "sim", PATIENTS=20000, DAYS=365, SEED=7)
    assert res.returncode == 0, res.stderr
    card = card_of(out)
    gap = card["bayes_auc"] - card["auc"]
    print(f"simulator seed 7, 20000 patients: test AUC {card['auc']:.4f}, Bayes AUC {card['bayes_auc']:.4f}, gap {gap:.4f}")
    assert abs(gap) <= 0.01
    w = card["windows"]
    assert w["by"].startswith("appointment date")
    assert w["train"]["to"] < w["validation"]["from"] <= w["validation"]["to"] < w["test"]["from"]
    # Bookings stop on day 365 (2026-01-05); the appointments after that week are left out.
    t = w["truncated_end"]
    assert t["truncated"] and "2026-01-05" <= t["from"] <= "2026-01-19" and w["excluded"]["truncated_end"]["rows"] > 0
    assert w["test"]["to"] < t["from"]
    assert any("truncated" in x for x in card["warnings"])
    assert card["leakage"]["passed"] and card["leakage"]["flip_check"]["run"] and card["leakage"]["flip_check"]["ok"]
    assert card["leakage"]["flip_check"]["changed_before"] == {}
    assert card["parity_max_abs_diff"] <= 1e-9 and card["parity"]["rows"] >= 10000
    assert {x["band"] for x in card["band_targets_test"]} == {"high", "very_high"}
    assert "validation" not in card and "ece" in card["validation_crossfit"]  # no in-sample figure
    attrs = {r["attribute"] for r in card["subgroups_test"]}
    assert attrs == {"age band", "deprivation decile"} and any("sex" in a for a in card["subgroups_absent"])
    assert_card_html(out, card)
    assert_no_real_row(out, work)
    check_built(out, work)


@pytest.fixture(scope="module")
def hand_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("hm") / "appointments.csv"
    rows = handmade.write(path, patients=900, seed=11)
    return path, rows


def config(tmp_path, **over):
    cfg = {"extras": {"distance_km": "numeric", "sex": "categorical"}, "sensitive": ["sex"]}
    cfg.update(over)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def test_csv_model_holds_no_row_of_the_csv(tmp_path, hand_csv):
    path, rows = hand_csv
    res, out, work = build_model(tmp_path, "csv", DATA=path, CONFIG=config(tmp_path))
    assert res.returncode == 0, res.stderr
    card = card_of(out)
    # No identifier, time or row of the CSV in any file of the folder.
    blobs = {f: (out / f).read_bytes() for f in os.listdir(out)}
    assert set(blobs) >= {"model.txt", "contract.json", "parity.csv", "card.json", "card.md", "card.html", "reference.json"}
    for r in rows:
        for col in ("patient_id", "appointment_id", "booked_at", "appointment_start"):
            needle = r[col].encode()
            hits = [f for f, b in blobs.items() if needle in b]
            assert not hits, f"{col} {r[col]} of the CSV is in {hits}"
    assert_no_real_row(out, work)
    ps = card["parity_set"]
    assert ps["synthetic"] > 0 and ps["edge"] > 0 and card["parity_max_abs_diff"] <= 1e-9
    # The subgroup table has the declared sensitive column, named by its text (csvimport
    # folds case), and the standard ones.
    sex = [r for r in card["subgroups_test"] if r["attribute"] == "sex"]
    assert {r["group"] for r in sex} == {"f", "m"} and all(r["rows"] >= 10 for r in sex)
    assert sum(r["rows"] for r in sex) == card["windows"]["test"]["rows"]
    assert {"age band", "deprivation decile", "sex"} <= {r["attribute"] for r in card["subgroups_test"]}
    lk = card["leakage"]
    assert lk["passed"] and set(lk["extra_auc_gain"]["gain"]) == {"extra.distance_km", "extra.sex"}
    assert not card["windows"]["truncated_end"]["truncated"]
    assert_card_html(out, card)
    with open(out / "bad_rows.csv") as f:
        assert list(csv.reader(f)) == [["line", "reason"]]
    # The reference holds the sex extra as the model reads it: its category codes (positions
    # in the contract's list), not text.
    check_built(out, work)
    sex = next(f for f in json.loads((out / "reference.json").read_text())["features"] if f["name"] == "extra.sex")
    assert sex["type"] == "categorical" and sex["categories"] == [0.0, 1.0]


def test_leaky_column_stops_training(tmp_path):
    path = tmp_path / "leaky.csv"
    handmade.write(path, patients=900, seed=11, leaky=True)
    cfg = {"extras": {"distance_km": "numeric", "dna_count_total": "numeric"}}
    res, out, _ = build_model(tmp_path, "leaky", DATA=path, CONFIG=config(tmp_path, **cfg))
    assert res.returncode != 0 and not out.exists()
    assert "extra.dna_count_total adds" in res.stderr and "allow_leakage" in res.stderr and "extra.distance_km adds" not in res.stderr
    res, out, _ = build_model(tmp_path, "allowed", DATA=path, CONFIG=config(tmp_path, allow_leakage=["extra.dna_count_total"], **cfg))
    assert res.returncode == 0, res.stderr
    card = card_of(out)
    assert card["leakage"]["findings_allowed"] and any("allow_leakage" in w for w in card["warnings"])
    assert "dna_count_total" in (out / "card.html").read_text()
