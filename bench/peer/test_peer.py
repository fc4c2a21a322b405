"""Parity of the Python peer with the Go consumer, without Kafka or Redis.

The same JSONL events go through goref (bench/peer/goref: scorer.Processor, RedisStore on
miniredis, scoring.Load) and through peer.process_batch with the same batch boundaries. Every
published message must agree: the same dead letters, the same bookings scored in the same
order, identical feature vectors and model inputs, probabilities within 1e-6, the same band
and risk.v1 fields; and every patient history left in the store must be byte-identical (rev
and the binary facts encoding).

Run from the repository root:  .venv-peer/bin/python -m pytest -q bench/peer
Needs Go (it builds cmd/producer and bench/peer/goref once per session).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import peer  # noqa: E402

MODEL_DIR = ROOT / "models" / "default"
TOL = 1e-6
SECRET = "bench-peer-parity-test-secret-0123456789"


# ---------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def bins(tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    for name, pkg in (("producer", "./cmd/producer"), ("goref", "./bench/peer/goref")):
        subprocess.run(["go", "build", "-o", str(d / name), pkg], cwd=ROOT, check=True)
    return d


@pytest.fixture(scope="session")
def model():
    return peer.Model(MODEL_DIR)


def simulate(bins, out: Path, seed: int, patients: int, days: int) -> Path:
    env = dict(os.environ, DNA_PSEUDONYM_SECRET=SECRET)
    subprocess.run([str(bins / "producer"), "--source", "sim", "--seed", str(seed),
                    "--patients", str(patients), "--days", str(days), "--out", str(out)],
                   env=env, check=True, capture_output=True)
    return out


def go_replay(bins, events: Path, tmp: Path, batch: int, retention_h=0, max_facts=0):
    out, hist = tmp / "go.jsonl", tmp / "go-histories.jsonl"
    subprocess.run([str(bins / "goref"), "-in", str(events), "-model", str(MODEL_DIR),
                    "-batch", str(batch), "-retention", f"{retention_h}h",
                    "-max-facts", str(max_facts), "-out", str(out), "-histories", str(hist)],
                   cwd=ROOT, check=True, capture_output=True)
    published = [json.loads(l) for l in out.read_text().splitlines()]
    histories = {}
    for l in hist.read_text().splitlines():
        h = json.loads(l)
        histories[h["key"]] = (int(h["rev"]), bytes.fromhex(h["facts_hex"]))
    return published, histories


class FakeRedis:
    """Just the pipelined HMGET/HSET/PEXPIRE that peer.RedisHistories uses, over a dict."""

    def __init__(self):
        self.data = {}

    def pipeline(self, transaction=True):
        return _FakePipe(self)


class _FakePipe:
    def __init__(self, r):
        self.r, self.ops = r, []

    def hmget(self, key, *fields):
        self.ops.append(lambda: [self.r.data.get(key, {}).get(f) for f in fields])

    def hset(self, key, mapping):
        def op():
            h = self.r.data.setdefault(key, {})
            for f, v in mapping.items():  # redis-py sends ints as their decimal digits
                h[f] = str(v).encode() if isinstance(v, int) else v
            return len(mapping)
        self.ops.append(op)

    def pexpire(self, key, ms):
        self.ops.append(lambda: True)

    def execute(self):
        return [op() for op in self.ops]


def key_of(line: bytes) -> bytes:
    """The Kafka key goref gives a line: its "patient" string, else empty."""
    try:
        obj = json.loads(line)
    except ValueError:
        return b""
    p = obj.get("patient") if isinstance(obj, dict) else None
    return p.encode() if isinstance(p, str) else b""


def py_replay(events: Path, model, batch: int, policy=peer.Policy(), predict="batch"):
    lines = events.read_bytes().splitlines()
    msgs = [peer.Message("appointments", 0, i, key_of(l), l) for i, l in enumerate(lines)]
    fake = FakeRedis()
    store = peer.RedisHistories(fake, "dna:", 1000)
    published = []
    for i in range(0, len(msgs), batch):
        res = peer.process_batch(msgs[i:i + batch], store.load, model, policy, predict,
                                 keep_trace=True)
        for _, v in res.dead_letters:
            published.append({"kind": "dead_letter", "value": json.loads(v)})
        for (_, v), (raw, x, p) in zip(res.risk, res.trace):
            published.append({"kind": "risk", "value": json.loads(v), "raw": raw, "x": x})
        store.save(res.dirty)
    histories = {k: (int(h["rev"]), h["facts"]) for k, h in fake.data.items()}
    return published, histories


def same_float(a, b) -> bool:
    if a is None:  # goref writes NaN as null
        return b != b
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def compare(go, py, go_hist, py_hist):
    """Assert parity; return (bookings scored, max |p_py - p_go|)."""
    assert [m["kind"] for m in py] == [m["kind"] for m in go], "published sequence differs"
    worst = 0.0
    scored = 0
    for i, (g, p) in enumerate(zip(go, py)):
        if g["kind"] == "dead_letter":
            assert p["value"]["offset"] == g["offset"], f"message {i}: different dead letter"
            continue
        scored += 1
        gv, pv = g["value"], p["value"]
        where = f"message {i} ({gv['appointment_id']} v{gv['booking_version']})"
        for k in ("schema", "appointment_id", "booking_version", "patient", "source_event_id",
                  "model_id"):
            assert pv[k] == gv[k], f"{where}: {k} {pv[k]!r} != {gv[k]!r}"
        assert peer.parse_time(pv["appointment_start"]) == peer.parse_time(gv["appointment_start"])
        bad = [n for n, a, b in zip(peer.NAMES, g["raw"], p["raw"]) if not same_float(a, b)]
        assert not bad, f"{where}: features differ: " + ", ".join(
            f"{n} go={g['raw'][peer.NAMES.index(n)]} py={p['raw'][peer.NAMES.index(n)]}" for n in bad)
        assert all(same_float(a, b) for a, b in zip(g["x"], p["x"])), f"{where}: model input differs"
        assert pv["features"] == gv["features"], f"{where}: features map differs"
        diff = abs(pv["probability"] - gv["probability"])
        worst = max(worst, diff)
        assert diff <= TOL, f"{where}: probability py={pv['probability']} go={gv['probability']}"
        assert pv["risk_band"] == gv["risk_band"], f"{where}: band differs"
    assert py_hist.keys() == go_hist.keys(), "different patients have histories"
    for k, (rev, facts) in go_hist.items():
        assert py_hist[k][0] == rev, f"{k}: rev {py_hist[k][0]} != {rev}"
        assert py_hist[k][1] == facts, f"{k}: encoded facts differ"
        assert peer.encode_facts(peer.decode_facts(facts)) == facts
    return scored, worst


# ------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("seed,patients,days,batch,predict", [
    (9, 500, 120, 500, "batch"),     # the events of the issue
    (9, 500, 120, 37, "row"),        # other batch boundaries, one predict per booking
    (9, 3000, 240, 500, "batch"),    # ~20k events, both DST changes
])
def test_simulated_parity(bins, model, tmp_path, seed, patients, days, batch, predict):
    events = simulate(bins, tmp_path / "ev.jsonl", seed, patients, days)
    go, go_hist = go_replay(bins, events, tmp_path, batch)
    py, py_hist = py_replay(events, model, batch, predict=predict)
    scored, worst = compare(go, py, go_hist, py_hist)
    n = len(events.read_bytes().splitlines())
    print(f"\nparity seed={seed} patients={patients} days={days} batch={batch} "
          f"predict={predict}: events={n} bookings_scored={scored} max_abs_diff={worst:.3g}")
    assert scored > 700


def test_pruning_parity(bins, model, tmp_path):
    """Short retention and a small cap, so History.Apply's pruning runs all the time."""
    events = simulate(bins, tmp_path / "ev.jsonl", 4, 400, 200)
    go, go_hist = go_replay(bins, events, tmp_path, 200, retention_h=24 * 40, max_facts=6)
    py, py_hist = py_replay(events, model, 200, peer.Policy(retention_s=40 * 86400, max_facts=6))
    scored, _ = compare(go, py, go_hist, py_hist)
    assert scored > 300


P1, P2, P3, P4 = "a" * 64, "b" * 64, "0123456789abcdef" * 4, "c" * 64


def ev(type_, t, appt, patient=P1, version=1, **kw):
    e = {"schema": "appointment.v1", "event_id": f"{appt}-{type_}-{t}", "type": type_,
         "event_time": t, "appointment_id": appt, "booking_version": version, "patient": patient}
    e.update(kw)
    return e


def booking(start, booked_at, specialty="110", **kw):
    b = {"specialty": specialty, "clinic": "C", "first_visit": True, "start": start,
         "booked_at": booked_at, "age_band": "35-44", "deprivation_decile": 4,
         "contact": {"sms": True, "opt_out": False}}
    b.update(kw)
    return b


def edge_events() -> list:
    """Hand-made events for the corners of the feature definition and the contract."""
    E = []
    add = lambda e: E.append(json.dumps(e) if isinstance(e, dict) else e)  # noqa: E731
    # history for P1: a DNA corrected to attended, a replayed outcome, cancellations of both kinds
    add(ev("booked", "2025-01-06T09:00:00Z", "A1", booking=booking("2025-01-20T10:00:00Z", "2025-01-06T09:00:00Z")))
    add(ev("did_not_attend", "2025-01-20T11:00:00Z", "A1"))
    add(ev("did_not_attend", "2025-01-20T11:00:00Z", "A1"))      # replay: no change
    add(ev("attended", "2025-01-21T08:00:00Z", "A1"))            # correction wins
    add(ev("did_not_attend", "2025-01-21T08:00:00Z", "A1"))      # same time: not newer, ignored
    add(ev("attended", "2025-01-22T08:00:00Z", "A1"))            # newer but same kind: ignored
    add(ev("booked", "2025-01-22T09:00:00Z", "A2", booking=booking("2025-03-30T00:30:00Z", "2025-01-22T09:00:00Z", specialty="+301")))
    add(ev("booked", "2025-01-22T09:05:00Z", "A3", booking=booking("2025-03-30T01:30:00Z", "2025-01-22T09:05:00Z", specialty="X1")))
    add(ev("cancelled", "2025-01-23T09:00:00Z", "A3", cancelled_by="patient"))
    add(ev("cancelled", "2025-01-23T09:30:00Z", "A3", cancelled_by="hospital"))   # both kinds count
    add(ev("booked", "2025-01-23T10:00:00Z", "A3", booking=booking("2025-04-01T10:00:00Z", "2025-01-23T10:00:00Z")))  # cancelled: skipped
    add(ev("rescheduled", "2025-01-24T09:00:00Z", "A2", version=3, booking=booking("2025-10-26T01:30:00+01:00", "2025-01-24T09:00:00Z")))
    add(ev("rescheduled", "2025-01-24T09:10:00Z", "A2", version=2, booking=booking("2025-02-10T12:00:00Z", "2025-01-24T09:10:00Z")))  # superseded: skipped, still applied
    add(ev("booked", "2025-01-25T09:00:00.999999999Z", "A4", booking=booking("2025-01-25T08:00:00.5Z", "2025-01-25T09:00:00.999999999Z", specialty="-5", deprivation_decile=None)))  # start before booked_at: lead 0
    # an outcome stamped later than a booking that follows it in the file: not seen by it
    add(ev("did_not_attend", "2025-06-01T09:00:00Z", "A4"))
    add(ev("booked", "2025-02-01T09:00:00+05:30", "A5", booking=booking("2025-12-25T23:59:59-08:00", "2025-02-01T09:00:00+05:30", specialty="2000000")))
    add(ev("booked", "2025-02-01T09:00:00Z", "A6", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", specialty="0110", extra={"distance_km": 3.5})))
    add(ev("booked", "2025-02-01T09:00:00Z", "A6", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", specialty="0110", extra={"distance_km": 3.5})))  # replay: scored again
    add(ev("rescheduled", "2025-02-02T09:00:00Z", "A6", version=2, booking=booking("2025-02-04T09:00:00Z", "2025-02-02T09:00:00Z")))
    add(ev("did_not_attend", "2025-02-04T10:00:00Z", "A6"))
    add(ev("booked", "2026-03-01T09:00:00Z", "A7", booking=booking("2026-03-29T01:00:00Z", "2026-03-01T09:00:00Z")))  # a year on
    # P2: the first events of a patient inside one batch
    add(ev("booked", "2025-02-05T09:00:00Z", "B1", patient=P2, booking=booking("2025-02-06T13:00:00Z", "2025-02-05T09:00:00Z", age_band="85+")))
    add(ev("attended", "2025-02-06T14:00:00Z", "B1", patient=P2))
    # known in the very second of the next booking: counts (only facts after as-of are left out)
    add(ev("booked", "2025-02-06T14:00:00Z", "B3", patient=P2, booking=booking("2025-02-20T13:00:00Z", "2025-02-06T14:00:00Z")))
    add(ev("booked", "2025-02-07T09:00:00Z", "B2", patient=P2, booking=booking("2025-02-08T13:00:00Z", "2025-02-07T09:00:00Z", first_visit=False, contact=None)))
    # P4: boundaries: a DNA exactly 365 days before a booking is not "in the last 365 days";
    # an appointment starting exactly at a booking's event time is no longer open
    add(ev("booked", "2025-01-01T09:00:00Z", "D1", patient=P4, booking=booking("2025-01-02T10:00:00Z", "2025-01-01T09:00:00Z")))
    add(ev("did_not_attend", "2025-01-02T10:00:00Z", "D1", patient=P4))
    add(ev("booked", "2025-03-01T09:00:00Z", "D3", patient=P4, booking=booking("2025-03-05T09:00:00Z", "2025-03-01T09:00:00Z")))
    add(ev("booked", "2025-03-05T09:00:00Z", "D4", patient=P4, booking=booking("2025-03-09T09:00:00Z", "2025-03-05T09:00:00Z")))
    add(ev("booked", "2026-01-02T10:00:00Z", "D2", patient=P4, booking=booking("2026-01-09T10:00:00Z", "2026-01-02T10:00:00Z")))
    # refused: each must be dead-lettered by both
    add("not json")
    add('{"schema":"appointment.v1"')
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X1", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z"), colour="red")))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X2", version=2, booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z"))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X3", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", age_band="90+"))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X4", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", deprivation_decile=11))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X5", booking=booking("2029-02-03T09:00:00Z", "2025-02-01T09:00:00Z"))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X6", booking=booking("2025-01-30T08:59:59Z", "2025-01-31T09:00:00Z"))))
    add(json.dumps(ev("attended", "1989-12-31T23:59:59Z", "X7")))
    add(json.dumps(ev("cancelled", "2025-02-01T09:00:00Z", "X8", cancelled_by="nobody")))
    add(json.dumps(ev("lost", "2025-02-01T09:00:00Z", "X9")))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X10", patient="A" * 64)))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X11", version=0)))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X12", version=10001)))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X13")).replace('"booking_version": 1', '"booking_version": 1.0'))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X14", schema="appointment.v2")))
    add(json.dumps(ev("attended", "2025-02-30T09:00:00Z", "X15")))
    add(json.dumps(ev("attended", "2025-02-01 09:00:00Z", "X16")))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X17", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", extra={"a": 1e999}))).replace("Infinity", "1e999"))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X18")))  # no booking
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X19", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", specialty=""))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X20", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", contact={"sms": True, "phone": "1"}))))
    add(json.dumps(ev("booked", "2025-02-01T09:00:00Z", "X21", booking=booking("2025-02-03T09:00:00Z", "2025-02-01T09:00:00Z", first_visit="yes"))))
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "")))
    add('[1, 2]')
    add(json.dumps(ev("attended", "2025-02-01T09:00:00Z", "X22")) + " {}")
    # accepted by Go's encoding/json, so by the peer too: a case-insensitive key, nulls
    add(json.dumps(ev("booked", "2025-02-09T09:00:00Z", "C1", patient=P3, booking=booking("2025-02-10T09:00:00Z", "2025-02-09T09:00:00Z", deprivation_decile=None, extra=None))).replace('"schema"', '"Schema"'))
    add(json.dumps(ev("attended", "2025-02-10T10:00:00Z", "C1", patient=P3, cancelled_by=None, booking=None)))
    return [l.encode() for l in E]


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_edge_case_parity(bins, model, tmp_path, batch):
    events = tmp_path / "edge.jsonl"
    events.write_bytes(b"\n".join(edge_events()) + b"\n")
    go, go_hist = go_replay(bins, events, tmp_path, batch)
    py, py_hist = py_replay(events, model, batch)
    scored, _ = compare(go, py, go_hist, py_hist)
    kinds = [m["kind"] for m in go]
    assert kinds.count("dead_letter") == 26 and scored == 18, (kinds.count("dead_letter"), scored)


def test_pruning_boundary_parity(bins, model, tmp_path):
    """A fact exactly one retention period older than the newest is kept; a second more, not."""
    E = []
    for appt, t in (("E1", "2025-01-01T09:00:00Z"), ("E2", "2025-01-01T10:00:00Z"),
                    ("E3", "2025-01-01T10:00:01Z"), ("E4", "2025-01-01T10:30:00Z")):
        E.append(json.dumps(ev("booked", t, appt, booking=booking("2025-01-02T09:00:00Z", t))))
    E.append(json.dumps(ev("cancelled", "2025-01-01T11:00:00Z", "E3", cancelled_by="hospital")))
    events = tmp_path / "prune.jsonl"
    events.write_text("\n".join(E) + "\n")
    go, go_hist = go_replay(bins, events, tmp_path, 2, retention_h=1, max_facts=3)
    py, py_hist = py_replay(events, model, 2, peer.Policy(retention_s=3600, max_facts=3))
    assert compare(go, py, go_hist, py_hist)[0] == 4


def test_codec_round_trip():
    facts = [("A1", "b", 1, 1_700_000_000, 1_700_100_000), ("A1", "d", 1, 1_699_000_000, 0),
             ("é", "r", 2**31, -5, -1), ("", "a", 0, 0, 0)]
    assert peer.decode_facts(peer.encode_facts(facts)) == facts
    assert peer.decode_facts(b"") == []
    for bad in (b"\x02\x00", b"\x01\x05", b"\x01\x01\x05AB", peer.encode_facts(facts) + b"\x00"):
        with pytest.raises(peer.CorruptHistory):
            peer.decode_facts(bad)


def test_key_mismatch_dead_lettered(model):
    line = json.dumps(ev("attended", "2025-02-01T09:00:00Z", "K1")).encode()
    res = peer.process_batch([peer.Message("t", 0, 0, b"other", line)],
                             lambda ps: {p: peer.History() for p in ps}, model)
    assert len(res.dead_letters) == 1 and not res.dirty
    dl = json.loads(res.dead_letters[0][1])
    assert "message key" in dl["reason"] and dl["reason_code"] == "key_mismatch"


def test_calibration_is_scoring_calibration():
    """np.interp is what scoring.Calibration.apply computes (its own test's table)."""
    xs, ys = np.array([0.01, 0.1, 0.2, 0.5]), np.array([0.02, 0.05, 0.05, 0.6])
    for p, want in [(0, 0.02), (0.005, 0.02), (0.01, 0.02), (0.055, 0.035), (0.1, 0.05),
                    (0.15, 0.05), (0.2, 0.05), (0.35, 0.325), (0.5, 0.6), (0.9, 0.6), (1, 0.6)]:
        assert abs(np.interp(p, xs, ys) - want) <= 1e-15
