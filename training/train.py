#!/usr/bin/env python3
"""Train the DNA (did not attend) model from a training set written by cmd/trainset.

Reads the trainset CSV (features computed by the Go feature code, one row per scored booking,
labelled with its eventual outcome), splits it by APPOINTMENT date into train / validation /
test (windows.py; a truncated end of the extract is found and left out), refuses features that
look like they know the outcome (leakage.py), trains a LightGBM binary model with early
stopping on validation, decides on validation whether a calibration map improves calibration
(calibrate.py, cross-fitted), sets the risk bands on the validation window, the latest before
the test window, and writes a model directory the Go scorer loads (scoring.Load):

  model.txt      the LightGBM text model (Booster.save_model)
  contract.json  model_id, features in model order with types, risk bands, model_sha256,
                 the calibration map when one is applied
  reference.json the test window's served scores and inputs, binned, for live drift
                 monitoring (reference.py)
  parity.csv     synthetic rows (parity.py; no row of the data) and the served probability
                 Python computes for them
  card.json      the model card as data: test AUC with its 95% interval, ECE, Bayes AUC
                 (simulator only), Go/LightGBM parity (measured by cmd/modelcheck), windows,
                 leakage checks, band shares against their targets, subgroups, warnings
  card.md        the model card for people, with roc.png, calibration.png, importance.png and
                 contacts.png; card.html the same, one self-contained file for a service manager

Usage:
  train.py --trainset trainset.csv --out DIR [--config config.json]
           [--data-summary summary.json] [--flip-check flip.json] [--provenance key=value ...]
           [--modelcheck CMD]

The config file (JSON, all keys optional) overrides DEFAULTS below; see docs/model.md.
Training is deterministic for a given trainset, config and LightGBM version.
"""

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

import calibrate
import card as cardlib
import cardhtml
import leakage
import parity as paritylib
import reference
import windows
from metrics import BINS, band_rates, band_targets, contacts_table, ece, metrics, subgroup_table

ID_COLUMNS = ["appointment_id", "booking_version", "event_time", "appointment_start"]
LABEL = "label"
TRUTH = "p_dna"
# cmd/trainset -model (make evaluate) adds what the Go scorer serves for each row.
SERVED = ["served_probability", "served_band"]
EXTRA_PREFIX = "extra."

DEFAULTS = {
    # Fractions of rows, in appointment-date order, for train / validation / test; each window
    # is whole days (UK dates). See windows.py.
    "split": [0.70, 0.15, 0.15],
    # "YYYY-MM-DD": the test window is the appointments on and after this UK date (validation
    # is then the last split[1] / (split[0] + split[1]) of the rows before it).
    "test_from": None,
    # "YYYY-MM-DD": appointments after this date are not used at all (the extract's reliable end).
    "test_to": None,
    # A truncated end of the extract (windows.TRUNCATION_RULE) is left out of every window
    # ("exclude") or kept in the test window ("keep"); the card says which.
    "truncated_end": "exclude",
    # The leakage guard (leakage.py): training stops when a feature alone reaches
    # max_single_feature_auc, an extra adds max_extra_auc_gain to the AUC of every other
    # feature, or a feature changes when later outcomes are flipped, unless allow_leakage is
    # true or lists the feature.
    "leakage": {"max_single_feature_auc": 0.9, "max_extra_auc_gain": 0.1},
    "allow_leakage": False,
    # Booking extras (CSV columns) to show in the card's subgroup table beside age band, sex and
    # deprivation decile; they need not be features. A column named "sex" is shown when present.
    "sensitive": [],
    # Features the model treats as categories (integer codes, never pandas categories: the Go
    # scorer feeds the raw codes).
    "categorical": ["specialty"],
    # Features to drop from the trainset columns (default: use them all).
    "exclude": [],
    # Booking extras (CSV extra columns, booking.extra keys) to use as features, with their
    # type: {"distance_km": "numeric", "clinic_code": "categorical"}. A categorical extra is
    # carried as a whole-number code (0 .. 2^31-2); see docs/model.md.
    "extras": {},
    "params": {
        "objective": "binary",
        "learning_rate": 0.05,
        # Shallow trees: DNA risk is close to additive on the log-odds scale (lead time, prior
        # DNAs, age, deprivation, ...). Measured on the simulator (seed 42, windows by
        # appointment date): 31 leaves left the test AUC 0.0126 below the Bayes AUC, 7 leaves 0.0074.
        "num_leaves": 7,
        "min_data_in_leaf": 200,
        "lambda_l2": 1.0,
        "cat_smooth": 10,
        "max_cat_to_onehot": 4,
        "metric": ["binary_logloss", "auc"],
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "seed": 42,
        "verbose": -1,
    },
    "num_boost_round": 2000,
    "early_stopping_rounds": 50,
    # Calibration is fitted on the validation window and applied only if its cross-fitted
    # ECE there (fit on one half, measured on the other, both ways) beats the uncalibrated
    # model's by at least min_ece_gain. methods is in order of preference: a later method is
    # chosen over an earlier one only if it beats it by min_ece_gain too. Platt scaling comes
    # first because it keeps the trees' order of bookings (no ties, so AUC and band shares
    # stay those of the trees) and cannot overfit the tails; isotonic regression has flat
    # steps and, fitted on a few rows at the top, can serve probabilities near 0 or 1.
    # force: "isotonic", "platt" or "none" overrides the decision (the card says so).
    "calibration": {"methods": ["platt", "isotonic"], "min_ece_gain": 0.001, "force": None},
    # Risk bands from the served scores of the validation window, the latest appointments
    # before the test window: medium = at or above the training base rate, high = top
    # high_fraction, very_high = top very_high_fraction. The card compares the test window's
    # shares with these targets and warns when one is off by more than half of it.
    "bands": {"high_fraction": 0.10, "very_high_fraction": 0.03},
    # Share of DNAs among those contacted that an extra reminder prevents (for the
    # contacts-per-prevented-DNA curve; Nelson et al. 2019 framing).
    "reminder_efficacy": 0.30,
    # Parity rows (parity.py): synthetic rows drawn feature by feature from the training
    # marginals, plus edge cases and perturbed rows that exercise missing values, infinities and
    # unseen / missing categories. No row of the data.
    "parity_rows": 12000,
    "parity_perturbed_rows": 2000,
    # Fewest rows, and fewest of each outcome, in each part of the split: fewer cannot early
    # stop, choose bands or measure AUC and calibration meaningfully.
    "minimums": {"train_rows": 1000, "validation_rows": 200, "test_rows": 200, "each_outcome": 20},
}

def log(msg):
    print(f"train.py: {msg}", file=sys.stderr, flush=True)


def die(msg):
    sys.exit(f"train.py: ERROR: {msg}")


def load_config(path):
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        with open(path) as f:
            try:
                user = json.load(f)
            except json.JSONDecodeError as e:
                die(f"{path}: not JSON: {e}")
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            die(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        for k, v in user.items():
            if isinstance(DEFAULTS[k], dict) and k != "extras":
                if not isinstance(v, dict):
                    die(f"{path}: {k} must be an object")
                cfg[k].update(v)
            else:
                cfg[k] = v
    split = cfg["split"]
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-9:
        die(f"split {split}: want three positive fractions summing to 1")
    bad = {k: t for k, t in cfg["extras"].items() if not re.fullmatch(r"[a-z0-9_]{1,64}", k) or t not in ("numeric", "categorical")}
    if bad:
        die(f"extras {bad}: want lower-case names (a-z 0-9 _, as csvimport names CSV columns) mapped to \"numeric\" or \"categorical\"")
    force = cfg["calibration"].get("force")
    if force not in (None, "none", "isotonic", "platt"):
        die(f"calibration.force {force!r}: want null, \"none\", \"isotonic\" or \"platt\"")
    if not 0 < cfg["reminder_efficacy"] <= 1:
        die(f"reminder_efficacy {cfg['reminder_efficacy']}: want a share in (0, 1]")
    for k in ("test_from", "test_to"):
        if cfg[k] is not None:
            try:
                windows.parse_date(k, cfg[k])
            except ValueError as e:
                die(str(e))
    if cfg["test_from"] and cfg["test_to"] and cfg["test_to"] < cfg["test_from"]:
        die(f"test_to {cfg['test_to']} is before test_from {cfg['test_from']}")
    if cfg["truncated_end"] not in ("exclude", "keep"):
        die(f"truncated_end {cfg['truncated_end']!r}: want \"exclude\" or \"keep\"")
    a = cfg["allow_leakage"]
    if not (isinstance(a, bool) or isinstance(a, list) and all(isinstance(x, str) for x in a)):
        die(f"allow_leakage {a!r}: want true, false or a list of feature names")
    if not 0.5 < cfg["leakage"]["max_single_feature_auc"] <= 1:
        die(f"leakage.max_single_feature_auc {cfg['leakage']['max_single_feature_auc']}: want a number in (0.5, 1]")
    if not 0 < cfg["leakage"]["max_extra_auc_gain"] <= 0.5:
        die(f"leakage.max_extra_auc_gain {cfg['leakage']['max_extra_auc_gain']}: want a number in (0, 0.5]")
    sens = cfg["sensitive"]
    if not isinstance(sens, list) or not all(isinstance(x, str) and re.fullmatch(r"[a-z0-9_]{1,64}", x) for x in sens):
        die(f"sensitive {sens!r}: want a list of extra column names (lower-case a-z 0-9 _)")
    return cfg


def read_trainset(path):
    """Reads the trainset by position: cmd/trainset writes the four ID columns, the
    feature columns, then label and p_dna (and, with -model, SERVED). booking_version is both
    an ID column and a feature, so the header names it twice; the ID columns are renamed with
    a leading "_". Returns the rows and the feature columns."""
    with open(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
    core = header[:-len(SERVED)] if header[-len(SERVED):] == SERVED else header
    if core[:4] != ID_COLUMNS or core[-2:] != [LABEL, TRUTH]:
        die(f"{path}: header {header[:4]}...{header[-2:]}, want {ID_COLUMNS}...{[LABEL, TRUTH]}; is it cmd/trainset output?")
    names = ["_" + c for c in ID_COLUMNS] + header[4:]
    if len(set(names)) != len(names):
        die(f"{path}: duplicate feature columns in {core[4:-2]}")
    df = pd.read_csv(path, header=0, names=names, dtype={"_appointment_id": str, "served_band": str}, keep_default_na=False, na_values=[""])
    df["_event_time"] = pd.to_datetime(df["_event_time"], utc=True, format="ISO8601")
    df["_appointment_start"] = pd.to_datetime(df["_appointment_start"], utc=True, format="ISO8601")
    if not df["_event_time"].is_monotonic_increasing:
        die(f"{path}: rows are not in event_time order")
    windows.add_dates(df)
    return df, core[4:-2]


def choose_features(cfg, df, columns):
    """The model's features: the trainset's standard columns minus exclude, plus the extras the
    config asks for (cmd/trainset -extras must have written them)."""
    extra_cols = [c for c in columns if c.startswith(EXTRA_PREFIX)]
    wanted = [EXTRA_PREFIX + k for k in cfg["extras"]]
    missing = [c for c in wanted if c not in columns]
    if missing:
        die(f"config extras {[c[len(EXTRA_PREFIX):] for c in missing]} are not in the training set "
            f"(it has {[c[len(EXTRA_PREFIX):] for c in extra_cols] or 'no extras'}): run cmd/trainset with -extras listing them")
    unknown_excl = [c for c in cfg["exclude"] if c not in columns]
    if unknown_excl:
        die(f"exclude names {unknown_excl}, which are not training-set columns {columns}")
    no_sens = [k for k in cfg["sensitive"] if EXTRA_PREFIX + k not in columns]
    if no_sens:
        die(f"sensitive {no_sens} are not in the training set (it has {[c[len(EXTRA_PREFIX):] for c in extra_cols] or 'no extras'}): "
            "run cmd/trainset with -extras listing them (make model does)")
    features = [c for c in columns if c not in cfg["exclude"] and (not c.startswith(EXTRA_PREFIX) or c in wanted)]
    categorical = [c for c in cfg["categorical"] if c in features]
    categorical += [EXTRA_PREFIX + k for k, t in cfg["extras"].items() if t == "categorical"]
    for c in categorical:
        if not c.startswith(EXTRA_PREFIX):
            continue
        x = df[c].dropna()
        bad = x[(x < 0) | (x >= 2**31 - 1) | (x != np.floor(x))]
        if len(bad):
            die(f"categorical extra {c[len(EXTRA_PREFIX):]!r} has {len(bad)} values that are not whole-number codes 0..2147483646 "
                f"(e.g. {bad.iloc[0]!r}); encode the categories as such codes, or declare it numeric")
    return features, categorical


def check_minimums(cfg, parts):
    m = cfg["minimums"]
    problems = []
    for name, part in parts.items():
        need = m[f"{name}_rows"]
        dna = int(part[LABEL].sum())
        if len(part) < need or min(dna, len(part) - dna) < m["each_outcome"]:
            problems.append(f"{name} has {len(part)} rows ({dna} did not attend, {len(part) - dna} attended), need {need} rows and {m['each_outcome']} of each outcome")
    if problems:
        total = sum(len(p) for p in parts.values())
        die(f"too little data to train and evaluate a model: {total} labelled rows split by appointment date: " + "; ".join(problems)
            + ". Use a longer history (a year or more of appointments is typical), or lower \"minimums\" in the config knowing the card will be noisy.")


def fmt(x):
    """Full-precision float for CSV: repr round-trips exactly; empty means missing."""
    return "" if math.isnan(x) else repr(float(x))


def bands(cfg, base_rate, valid_scores):
    b = cfg["bands"]
    high = float(np.quantile(valid_scores, 1 - b["high_fraction"]))
    very_high = float(np.quantile(valid_scores, 1 - b["very_high_fraction"]))
    out = [
        {"name": "low", "min_probability": 0},
        {"name": "medium", "min_probability": round(float(base_rate), 6)},
        {"name": "high", "min_probability": round(high, 6)},
        {"name": "very_high", "min_probability": round(very_high, 6)},
    ]
    for lo, hi in zip(out, out[1:]):
        if not hi["min_probability"] > lo["min_probability"]:
            die(f"risk bands not ascending ({out}); adjust bands in the config")
    return out


def feature_entry(c, categorical, text_codes):
    """A contract feature. A categorical extra that held text carries its code list (learned by
    cmd/trainset, in its -summary as "categories"): the scorer maps the same text to the same
    code, and unlisted text to missing (docs/csv.md)."""
    f = {"name": c, "type": "categorical" if c in categorical else "numeric"}
    if c in categorical and c.startswith(EXTRA_PREFIX) and c[len(EXTRA_PREFIX):] in text_codes:
        f["categories"] = text_codes[c[len(EXTRA_PREFIX):]]
    return f


def dump_contract(contract):
    """contract.json, indented, with the calibration knots one array per line."""
    c = dict(contract)
    cal = c.get("calibration")
    if cal:
        c["calibration"] = dict(cal, x="@X@", y="@Y@")
    text = json.dumps(c, indent=2) + "\n"
    if cal:
        # json.dumps writes floats with repr: they read back exactly.
        text = text.replace('"@X@"', json.dumps(cal["x"])).replace('"@Y@"', json.dumps(cal["y"]))
    return text


def run_modelcheck(cmd, out):
    """Runs the Go check (cmd/modelcheck) on the written directory: the model must load as the
    consumer loads it and match parity.csv within 1e-9."""
    argv = shlex.split(cmd) + [out]
    log(f"checking Go parity: {' '.join(argv)}")
    try:
        res = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError as e:
        die(f"cannot run the Go model check {argv[0]!r}: {e}. Run from the repository root with Go installed, or pass --modelcheck")
    sys.stderr.write(res.stderr)
    try:
        rep = json.loads(res.stdout)
    except json.JSONDecodeError:
        die(f"Go model check failed (exit {res.returncode}): the model directory {out} does not load in the scorer")
    if res.returncode != 0 or not rep.get("ok"):
        die(f"Go/LightGBM parity failed: {json.dumps(rep)}")
    return rep


def feature_status(df, features):
    """Features that carry no information in the rows used: absent (always missing) or
    constant (one value)."""
    absent = [f for f in features if df[f].isna().all()]
    constant = [f for f in features if f not in absent and df[f].nunique(dropna=False) == 1]
    return constant, absent


MAX_GROUPS = 20


def _values(col, labels=None):
    """{label: mask} for each value of col (at most MAX_GROUPS, then "other"), "unknown" for
    missing."""
    x = col.to_numpy(float)
    out = {}
    vals, counts = np.unique(x[~np.isnan(x)], return_counts=True)
    order = sorted(zip(vals, counts), key=lambda vc: vc[0])
    if len(order) > MAX_GROUPS:
        top = {v for v, _ in sorted(order, key=lambda vc: -vc[1])[:MAX_GROUPS - 1]}
        order = [(v, c) for v, c in order if v in top]
    shown = np.zeros(len(x), bool)
    for v, _ in order:
        m = x == v
        shown |= m
        label = labels[int(v)] if labels is not None and 0 <= v < len(labels) and v == int(v) else f"{v:g}"
        out[label] = m
    if (~shown & ~np.isnan(x)).any():
        out["other"] = ~shown & ~np.isnan(x)
    if np.isnan(x).any():
        out["unknown"] = np.isnan(x)
    return out


def subgroups(cfg, part, age_bands, categories):
    """The subgroup attributes of a window's rows: [(attribute, {group: mask})], and the
    attributes the data does not have. categories: the code lists of text columns (trainset
    -summary), so a group is named by its text (F, M) rather than its code."""
    groups, absent = [], []
    if "age_band" in part.columns:
        ab = part["age_band"].where(part["age_band"] >= 0)
        groups.append(("age band", _values(ab, age_bands)))
    sex = EXTRA_PREFIX + "sex"
    if sex in part.columns:
        groups.append(("sex", _values(part[sex], categories.get("sex"))))
    else:
        absent.append("sex (add a sex column to the CSV and list it under \"sensitive\" in the training config)")
    if "deprivation_decile" in part.columns and part["deprivation_decile"].notna().any():
        groups.append(("deprivation decile", _values(part["deprivation_decile"])))
    else:
        absent.append("deprivation decile (not in the data)")
    for k in cfg["sensitive"]:
        if k != "sex":
            groups.append((k, _values(part[EXTRA_PREFIX + k], categories.get(k))))
    return groups, absent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainset", required=True, help="CSV written by cmd/trainset")
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--config", help="JSON overriding the defaults (see docs/model.md)")
    ap.add_argument("--data-summary", help="cmd/trainset -summary JSON, copied into the card")
    ap.add_argument("--flip-check", help="cmd/trainset -flip-check JSON: training stops if a feature changed when later outcomes were flipped")
    ap.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE", help="facts about the data for the card (repeatable)")
    ap.add_argument("--modelcheck", default=os.environ.get("MODELCHECK", "go run ./cmd/modelcheck"),
                    help="command that checks a model directory in Go and prints its parity report (default: %(default)s; env MODELCHECK)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    provenance = {}
    for kv in args.provenance:
        k, sep, v = kv.partition("=")
        if not sep:
            die(f"--provenance {kv!r}: want KEY=VALUE")
        provenance[k] = v
    data_summary = flip = None
    if args.data_summary:
        with open(args.data_summary) as f:
            data_summary = json.load(f)
    if args.flip_check:
        with open(args.flip_check) as f:
            flip = json.load(f)

    df, columns = read_trainset(args.trainset)
    features, categorical = choose_features(cfg, df, columns)
    for c in features:
        df[c] = df[c].astype("float64")
    try:
        train, valid, test, win = windows.split(cfg, df)
    except ValueError as e:
        die(str(e))
    check_minimums(cfg, {"train": train, "validation": valid, "test": test})
    for w in win["warnings"]:
        log("WARNING: " + w)
    log(f"{len(df)} rows; by appointment date: train {len(train)} ({win['train']['from']} to {win['train']['to']}), "
        f"validation {len(valid)} ({win['validation']['from']} to {win['validation']['to']}), test {len(test)} "
        f"({win['test']['from']} to {win['test']['to']}); features {features}; categorical {categorical}")

    leak, problems = leakage.check(cfg, train, valid, features, categorical, LABEL, flip)
    if problems:
        die("the training set looks like it leaks the outcome, so no model was trained:\n  * " + "\n  * ".join(problems)
            + "\nFix the column (a feature must hold only what was known when the booking was made), leave it out (\"exclude\" "
            "or \"extras\" in the config), or, if you are sure, list it under \"allow_leakage\" in the config; the card will say so.")

    params = dict(cfg["params"])
    dtrain = lgb.Dataset(train[features], train[LABEL], categorical_feature=categorical, free_raw_data=False)
    dvalid = lgb.Dataset(valid[features], valid[LABEL], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg["num_boost_round"],
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(cfg["early_stopping_rounds"], first_metric_only=True, verbose=False)],
    )
    log(f"best iteration {booster.best_iteration}")

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.txt")
    booster.save_model(model_path, num_iteration=booster.best_iteration)
    # Everything below uses the model as saved, so the parity rows and the card describe
    # exactly the file the Go scorer loads.
    model = lgb.Booster(model_file=model_path)
    with open(model_path, "rb") as f:
        model_hash = hashlib.sha256(f.read()).hexdigest()

    now = dt.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", dt.datetime.now(dt.timezone.utc).timestamp())), dt.timezone.utc)
    y_valid, y_test = valid[LABEL].to_numpy(), test[LABEL].to_numpy()
    raw_valid = model.predict(valid[features])
    raw_test = model.predict(test[features])
    try:
        table, calibration, valid_oof = calibrate.decide(cfg, raw_valid, y_valid)
    except ValueError as e:
        die(str(e))
    if table is None:
        # For the record: what the best candidate would have done on the test window.
        best = calibration["best_candidate"]
        if best:
            t = calibrate.fit_table(best, raw_valid, y_valid)
            if t is not None:
                calibration["test_ece_if_" + best + "_applied"] = ece(y_test, calibrate.apply_table(t, raw_test))
    else:
        calibration["test_ece_uncalibrated"] = ece(y_test, raw_test)
    log(("calibration: " if table is not None else "calibration ") + calibration["decision"])
    p_valid = calibrate.apply_table(table, raw_valid)
    base_rate = float(train[LABEL].mean())

    contract = {
        "model_id": None,  # below: it names what is served
        "features": [feature_entry(c, categorical, (data_summary or {}).get("categories") or {}) for c in features],
        "risk_bands": bands(cfg, base_rate, p_valid),
        "trained_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_rows": len(train),
        "training_window": {"appointments_from": win["train"]["from"], "appointments_to": win["train"]["to"]},
        "label": "did_not_attend",
        "lightgbm_version": lgb.__version__,
        "model_sha256": model_hash,
    }
    if table is not None:
        contract["calibration"] = {"method": calibration["method"], "x": [float(x) for x in table[0]], "y": [float(y) for y in table[1]]}
    # The id's hash covers everything that decides a risk event's probability and band: the
    # trees, the features, the bands and the calibration map. Same trees, new calibration or
    # bands: a new id, so risk events always say which scoring produced them.
    served = json.dumps({k: contract.get(k) for k in ("features", "risk_bands", "calibration")}, sort_keys=True)
    # A decision-time model (cmd/trainset -as-of decision: rows as of start - lead) says so in
    # its id, so a risk event shows which of the two models scored it.
    as_of = (data_summary or {}).get("as_of", "booking")
    kind = "decision-" if as_of == "decision" else ""
    model_id = f"dna-gbm-{kind}{now:%Y%m%d}-{hashlib.sha256((model_hash + served).encode()).hexdigest()[:8]}"
    contract["model_id"] = model_id
    with open(os.path.join(args.out, "contract.json"), "w") as f:
        f.write(dump_contract(contract))
    if table is not None:
        # The served table is the one read back from contract.json (json round-trips floats).
        with open(os.path.join(args.out, "contract.json")) as f:
            cal = json.load(f)["calibration"]
        table = (np.array(cal["x"]), np.array(cal["y"]))
    p_test = calibrate.apply_table(table, raw_test)
    # The training reference for live drift monitoring: the test window scored as served.
    reference.write(args.out, reference.build(model_id, test, features, set(categorical), p_test, win["test"]))

    rng = np.random.default_rng(params.get("seed", 0))
    parity, parity_report = paritylib.rows(df, features, categorical, cfg["parity_rows"], cfg["parity_perturbed_rows"], rng)
    parity["probability"] = calibrate.apply_table(table, model.predict(parity[features]))
    with open(os.path.join(args.out, "parity.csv"), "w") as f:
        f.write(",".join(["kind"] + features + ["probability"]) + "\n")
        for row in parity.itertuples(index=False):
            f.write(row[0] + "," + ",".join(fmt(x) for x in row[1:]) + "\n")

    check = run_modelcheck(args.modelcheck, args.out)

    efficacy = cfg["reminder_efficacy"]
    test_metrics = metrics(y_test, p_test)
    has_truth = TRUTH in test.columns and test[TRUTH].notna().all()
    importance = sorted(zip(features, model.feature_importance("gain")), key=lambda kv: -kv[1])
    rates = band_rates(contract["risk_bands"], y_test, p_test)
    targets = band_targets(contract["risk_bands"], rates, {"high": cfg["bands"]["high_fraction"], "very_high": cfg["bands"]["very_high_fraction"]})
    high = next(b["min_probability"] for b in contract["risk_bands"] if b["name"] == "high")
    groups, groups_absent = subgroups(cfg, test, (data_summary or {}).get("age_bands"), (data_summary or {}).get("categories") or {})
    sub_rows, sub_warnings = subgroup_table(groups, y_test, p_test, p_test >= high)
    constant, absent = feature_status(pd.concat([train, valid, test]), features)

    warnings = list(win["warnings"])
    for t in targets:
        if t["off_target"]:
            warnings.append(f"{t['share']:.1%} of the test window's bookings are in the {t['band']} band or above, against a target of "
                            f"{t['target']:.0%} (off by more than half): the thresholds, set on the validation window, do not carry "
                            "over to later appointments; retrain on more recent data or review the band fractions.")
    warnings += [f"{f} (allowed by the config's allow_leakage)" for f in leak["findings_allowed"]]
    warnings += ["Subgroup " + w for w in sub_warnings]
    if absent:
        warnings.append(f"Features with no value in the data (the model cannot use them): {', '.join(absent)}.")

    card = {
        "model_id": model_id,
        "trained_at": contract["trained_at"],
        "lightgbm_version": lgb.__version__,
        # Headline figures: the served model on the test window.
        "auc": test_metrics["auc"],
        "auc_ci95": test_metrics["auc_ci95"],
        "ece": test_metrics["ece"],
        "ece_bins": BINS,
        # When each row's features were computed: at its booking, or at the decision point
        # (decision_lead_hours before the appointment start, history replayed up to it).
        "as_of": {"rows": as_of, **({"decision_lead_hours": data_summary.get("decision_lead_hours")} if as_of == "decision" else {})},
    }
    if has_truth:
        card["bayes_auc"] = float(roc_auc_score(y_test, test[TRUTH].to_numpy()))
    else:
        card["bayes_auc_note"] = ("the data did not come from the simulator, so the true probability of each DNA, and with "
                                  "it the best AUC any model could reach on these rows, is unknown")
    card.update({
        "warnings": warnings,
        "parity_max_abs_diff": check["max_abs_diff"],
        "parity": {k: check[k] for k in ("rows", "rows_with_missing", "missing_categories", "distinct_categories",
                                         "max_abs_diff_raw", "max_abs_diff_encoded", "max_abs_diff", "max_diff_allowed", "calibrated")},
        "parity_set": parity_report,
        "training_window": contract["training_window"],
        "windows": win,
        "rows": {"train": len(train), "validation": len(valid), "test": len(test), "parity": len(parity)},
        "best_iteration": booster.best_iteration,
        "features": contract["features"],
        "features_constant": constant,
        "features_absent": absent,
        "base_rate_train": base_rate,
        "test": test_metrics,
        "calibration": calibration,
        "leakage": leak,
        "risk_bands": contract["risk_bands"],
        "band_rates_test": rates,
        "band_targets_test": targets,
        "subgroups_test": sub_rows,
        "subgroups_absent": groups_absent,
        "reminder_efficacy": efficacy,
        "contacts_per_prevented_dna_test": contacts_table(y_test, p_test, efficacy),
        "feature_importance_gain": {k: round(float(v), 3) for k, v in importance},
        "data": {"provenance": provenance, "trainset": data_summary},
        "model_sha256": model_hash,
        "config": cfg,
    })
    if valid_oof is not None:
        # Out of fold only: the map that scored each half was fitted on the other half.
        card["validation_crossfit"] = dict(metrics(y_valid, valid_oof), note="served probabilities cross-fitted on the two halves "
                                           "of the validation window; validation also chose the number of trees")
    if has_truth:
        card["test"]["bayes_auc"] = card["bayes_auc"]
        card["contacts_per_prevented_dna_test_bayes"] = contacts_table(y_test, test[TRUTH].to_numpy(), efficacy)
    card["plots"] = cardlib.plots(args.out, card, y_test, p_test, test[TRUTH].to_numpy() if has_truth else None, importance, efficacy)
    with open(os.path.join(args.out, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    cardlib.markdown(args.out, card)
    cardhtml.write(args.out, card)
    for w in warnings[len(win["warnings"]):]:
        log("WARNING: " + w)
    bayes = f"{card['bayes_auc']:.4f}" if "bayes_auc" in card else "n/a (not simulator data)"
    log(f"{model_id}: test AUC {card['auc']:.4f} (95% CI {card['auc_ci95'][0]:.4f}-{card['auc_ci95'][1]:.4f}), ECE {card['ece']:.4f}, "
        f"Bayes AUC {bayes}, parity {card['parity_max_abs_diff']:.3g}, calibrated {calibration['applied']}, {len(warnings)} warning(s)")


if __name__ == "__main__":
    main()
