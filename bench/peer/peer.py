#!/usr/bin/env python3
"""The Python peer of cmd/consumer, for the issue 6 benchmark.

The same job as the Go consumer, written the way a Python team would: confluent-kafka
(librdkafka) for Kafka, redis-py for the feature store, lightgbm's own Booster for the model,
numpy for the batch. Per consumed batch it

1. decodes and validates each appointment.v1 event (json.loads plus checks of the contract in
   docs/events.md) and dead-letters refused ones (deadletter.v1, with the reason);
2. loads the batch's patient histories from Redis with one pipelined HMGET per patient (the
   binary codec of featurestore/codec.go, key ``<prefix>{<pseudonym>}:history``);
3. for each booked or rescheduled event whose appointment is neither cancelled nor superseded
   by a newer version, computes the features from the history as it stands before the event
   is applied (a port of featurestore.Compute), then applies every event to the in-memory
   history (a port of featurestore.History.Apply);
4. scores the batch's bookings with one ``Booster.predict`` on a numpy matrix (``--predict
   batch``, the default) or one call per booking (``--predict row``), applies the contract's
   calibration with ``numpy.interp`` and picks the risk band;
5. produces the risk.v1 events keyed by patient (murmur2 partitioner, acks=all), flushes the
   producer, writes the changed histories back (pipelined HSET rev+1 and facts, PEXPIRE), and
   commits the batch's offsets synchronously: at-least-once, like the Go consumer.

Deliberate simplifications against cmd/consumer are listed in README.md beside this file (no
compare-and-set on save, no retry loop around a failed batch, one Redis node, no metrics).

Run ``python peer.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

import numpy as np

log = logging.getLogger("peer")

# --------------------------------------------------------------------------------------------
# Event contract (events/events.go, docs/events.md)

APPOINTMENT_SCHEMA = "appointment.v1"
RISK_SCHEMA = "risk.v1"
DEAD_LETTER_SCHEMA = "deadletter.v1"
MAX_EVENT_BYTES = 64 << 10

BOOKED, RESCHEDULED, CANCELLED, ATTENDED, DID_NOT_ATTEND = (
    "booked", "rescheduled", "cancelled", "attended", "did_not_attend")
BOOKING_TYPES = (BOOKED, RESCHEDULED)
AGE_BANDS = ("0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+")
AGE_BAND_INDEX = {b: i for i, b in enumerate(AGE_BANDS)}

NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY = 24 * 3600
MIN_NS = 631152000 * NS    # 1990-01-01T00:00:00Z
MAX_NS = 4102444800 * NS   # 2100-01-01T00:00:00Z, excluded
THREE_YEARS_NS = 3 * 365 * 24 * HOUR_NS

_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))",
    re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")

_EVENT_FIELDS = frozenset(("schema", "event_id", "type", "event_time", "appointment_id",
                           "booking_version", "patient", "cancelled_by", "booking"))
_BOOKING_FIELDS = frozenset(("specialty", "clinic", "first_visit", "start", "booked_at",
                             "age_band", "deprivation_decile", "contact", "extra"))
_CONTACT_FIELDS = frozenset(("sms", "opt_out"))
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


class InvalidEvent(ValueError):
    """An appointment event that breaks its contract; the message is the dead-letter reason and
    code its reason_code (events.DeadLetterReasons in Go)."""

    def __init__(self, detail: str, code: str = "contract_violation"):
        super().__init__("invalid appointment event: " + detail)
        self.code = code


def _reject_constant(name: str):
    raise InvalidEvent(f"json: invalid literal {name}")


def _fields(obj, known: frozenset, where: str) -> dict:
    """The object's fields, refusing unknown ones. Like Go's encoding/json, a key that is not an
    exact field name may still match one case-insensitively, and null means "absent"."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"json: {where} is not an object")
    if obj.keys() <= known:
        return obj
    out = {}
    for k, v in obj.items():
        name = k if k in known else next((n for n in known if n == k.lower()), None)
        if name is None:
            raise InvalidEvent(f'json: unknown field "{k}"')
        out[name] = v
    return out


def _str(d: dict, name: str) -> str:
    v = d.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidEvent(f"json: {name} is not a string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape: Go's decoder makes it U+FFFD
        v = _SURROGATE.sub("\ufffd", v)
    return v


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8"))


def _int(d: dict, name: str) -> int | None:
    v = d.get(name)
    if v is None:
        return None
    if type(v) is not int:  # JSON 1.0 or 1e0 is not an int to Go either; bool is refused
        raise InvalidEvent(f"json: {name} is not an integer")
    if not -(1 << 63) <= v < (1 << 63):
        raise InvalidEvent(f"json: {name} overflows int64")
    return v


def _bool(d: dict, name: str) -> bool:
    v = d.get(name)
    if v is None:
        return False
    if type(v) is not bool:
        raise InvalidEvent(f"json: {name} is not a boolean")
    return v


def parse_time(s: str) -> int:
    """An RFC 3339 time, as Go's time.Time JSON decoding reads it, in unix nanoseconds."""
    m = _RFC3339.fullmatch(s)
    if not m:
        raise ValueError(f"{s!r} is not an RFC 3339 time")
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac, z, sign, oh, om = m.group(7), m.group(8), m.group(9), m.group(10), m.group(11)
    if hh > 23 or mi > 59 or ss > 59:
        raise ValueError(f"{s!r}: clock out of range")
    days = datetime(y, mo, d).toordinal() - _EPOCH_ORDINAL  # ValueError on a bad date
    sec = days * DAY + hh * 3600 + mi * 60 + ss
    if not z:
        oh, om = int(oh), int(om)
        if oh > 23 or om > 59:
            raise ValueError(f"{s!r}: offset out of range")
        off = oh * 3600 + om * 60
        sec -= off if sign == "+" else -off
    ns = int((frac or "0")[:9].ljust(9, "0"))
    return sec * NS + ns


def _time(d: dict, name: str) -> tuple[int, str]:
    v = d.get(name)
    if v is None:
        return -62135596800 * NS, ""  # Go's zero time, refused by the range check
    if not isinstance(v, str):
        raise InvalidEvent(f"json: {name} is not a string")
    try:
        return parse_time(v), v
    except ValueError as e:
        raise InvalidEvent(f"json: {name}: {e}") from None


def _check_time(name: str, t: int, text: str):
    if t < MIN_NS or t >= MAX_NS:
        raise InvalidEvent(f"{name} {text or '0001-01-01T00:00:00Z'} outside 1990..2100")


@dataclass(slots=True)
class Booking:
    specialty: str
    clinic: str
    first_visit: bool
    start_ns: int
    start_text: str
    booked_ns: int
    booked_text: str
    age_band: str
    deprivation: int | None
    sms: bool
    opt_out: bool
    extra: dict | None


@dataclass(slots=True)
class Appointment:
    event_id: str
    type: str
    at: int  # event_time in unix seconds, as featurestore.FactOf stamps it
    appointment_id: str
    version: int
    patient: str
    cancelled_by: str
    booking: Booking | None


def _booking(obj) -> Booking | None:
    if obj is None:
        return None
    b = _fields(obj, _BOOKING_FIELDS, "booking")
    contact = b.get("contact")
    c = _fields(contact, _CONTACT_FIELDS, "booking.contact") if contact is not None else {}
    extra = b.get("extra")
    if extra is not None:
        if not isinstance(extra, dict):
            raise InvalidEvent("json: booking.extra is not an object")
        for k, v in extra.items():
            if v is not None and (type(v) not in (int, float)):
                raise InvalidEvent(f"json: booking.extra[{k!r}] is not a number")
            try:
                extra[k] = 0.0 if v is None else float(v)
            except OverflowError:
                raise InvalidEvent(f"json: booking.extra[{k!r}] out of range") from None
    start, start_text = _time(b, "start")
    booked, booked_text = _time(b, "booked_at")
    return Booking(
        specialty=_str(b, "specialty"), clinic=_str(b, "clinic"),
        first_visit=_bool(b, "first_visit"), start_ns=start, start_text=start_text,
        booked_ns=booked, booked_text=booked_text, age_band=_str(b, "age_band"),
        deprivation=_int(b, "deprivation_decile"), sms=_bool(c, "sms"),
        opt_out=_bool(c, "opt_out"), extra=extra)


def _validate_booking(b: Booking):
    if b.specialty == "" or _nbytes(b.specialty) > 16:
        raise InvalidEvent("booking.specialty missing or longer than 16")
    if _nbytes(b.clinic) > 64:
        raise InvalidEvent("booking.clinic longer than 64")
    _check_time("booking.start", b.start_ns, b.start_text)
    _check_time("booking.booked_at", b.booked_ns, b.booked_text)
    if b.start_ns < b.booked_ns - 24 * HOUR_NS:
        raise InvalidEvent(f"booking.start {b.start_text} is before booked_at {b.booked_text}")
    if b.start_ns - b.booked_ns > THREE_YEARS_NS:
        raise InvalidEvent("booking lead time over three years")
    if b.age_band not in AGE_BAND_INDEX:
        raise InvalidEvent(f"booking.age_band {b.age_band!r} not one of {list(AGE_BANDS)}")
    if b.deprivation is not None and not 1 <= b.deprivation <= 10:
        raise InvalidEvent(f"booking.deprivation_decile {b.deprivation} out of range 1..10")
    if b.extra is not None:
        if len(b.extra) > 64:
            raise InvalidEvent(f"booking.extra has {len(b.extra)} entries, limit 64")
        for k, v in b.extra.items():
            if not math.isfinite(v):
                raise InvalidEvent(f"booking.extra[{k!r}] is not a finite number")


def decode_appointment(value: bytes) -> Appointment:
    """Parse and validate one appointment.v1 event; InvalidEvent says why it is refused."""
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(value)} bytes, limit {MAX_EVENT_BYTES}", "too_large")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("event is not valid UTF-8", "not_utf8") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise InvalidEvent(f"json: {e}", "malformed_json") from None
    except RecursionError:
        raise InvalidEvent("json: nested too deeply", "malformed_json") from None
    d = _fields(obj, _EVENT_FIELDS, "event")
    event_time, event_text = _time(d, "event_time")
    version = _int(d, "booking_version") or 0
    ev = Appointment(
        event_id=_str(d, "event_id"), type=_str(d, "type"), at=event_time // NS,
        appointment_id=_str(d, "appointment_id"), version=version, patient=_str(d, "patient"),
        cancelled_by=_str(d, "cancelled_by"), booking=_booking(d.get("booking")))
    schema = _str(d, "schema")
    # The checks of events.Appointment.Validate, in its order.
    if schema != APPOINTMENT_SCHEMA:
        raise InvalidEvent(f"schema {schema!r}, want {APPOINTMENT_SCHEMA!r}", "unknown_schema")
    if ev.event_id == "" or _nbytes(ev.event_id) > 128:
        raise InvalidEvent("event_id missing or longer than 128")
    if ev.appointment_id == "" or _nbytes(ev.appointment_id) > 128:
        raise InvalidEvent("appointment_id missing or longer than 128")
    if not _PSEUDONYM.fullmatch(ev.patient):
        raise InvalidEvent("patient must be a 64-hex-digit pseudonym")
    if not 1 <= ev.version <= 10000:
        raise InvalidEvent(f"booking_version {ev.version} out of range 1..10000")
    _check_time("event_time", event_time, event_text)
    if ev.type in BOOKING_TYPES:
        if ev.booking is None:
            raise InvalidEvent(f"{ev.type} event without booking facts")
        if ev.type == BOOKED and ev.version != 1:
            raise InvalidEvent(f"booked event with booking_version {ev.version}, want 1")
    elif ev.type == CANCELLED:
        if ev.cancelled_by not in ("patient", "hospital"):
            raise InvalidEvent(f"cancelled_by {ev.cancelled_by!r}, want patient or hospital")
    elif ev.type not in (ATTENDED, DID_NOT_ATTEND):
        raise InvalidEvent(f"unknown type {ev.type!r}")
    if ev.booking is not None:
        _validate_booking(ev.booking)
    return ev


# --------------------------------------------------------------------------------------------
# Patient history (featurestore/history.go) and its Redis encoding (featurestore/codec.go)

K_BOOKED, K_RESCHEDULED, K_PATIENT_CANCEL, K_HOSPITAL_CANCEL, K_ATTENDED, K_DNA = \
    "b", "r", "p", "h", "a", "d"
OUTCOME_KINDS = (K_ATTENDED, K_DNA)
BOOKING_KINDS = (K_BOOKED, K_RESCHEDULED)
_KIND_OF = {BOOKED: K_BOOKED, RESCHEDULED: K_RESCHEDULED, ATTENDED: K_ATTENDED,
            DID_NOT_ATTEND: K_DNA}

# A fact is a tuple (appointment, kind, version, at, start): at and start in unix seconds,
# start 0 unless the fact is a booking.


@dataclass(frozen=True, slots=True)
class Policy:
    """How much history is kept per patient (featurestore.Policy and its defaults)."""
    retention_s: int = 3 * 365 * DAY
    max_facts: int = 1000


def fact_of(ev: Appointment) -> tuple:
    kind = _KIND_OF.get(ev.type)
    if kind is None:
        kind = K_PATIENT_CANCEL if ev.cancelled_by == "patient" else K_HOSPITAL_CANCEL
    start = 0
    if ev.booking is not None and kind in BOOKING_KINDS:
        start = ev.booking.start_ns // NS
    return (ev.appointment_id, kind, ev.version, ev.at, start)


class History:
    __slots__ = ("rev", "facts")

    def __init__(self, rev: int = 0, facts: list | None = None):
        self.rev = rev
        self.facts = facts if facts is not None else []

    def apply(self, f: tuple, policy: Policy) -> bool:
        """Record fact f; False if it is already known (featurestore.History.Apply)."""
        appt, kind = f[0], f[1]
        facts = self.facts
        if kind in OUTCOME_KINDS:
            latest = None
            for g in facts:
                if g[0] == appt and g[1] in OUTCOME_KINDS and (latest is None or g[3] >= latest[3]):
                    latest = g
            if latest is not None and (latest[3] >= f[3] or latest[1] == kind):
                return False
        else:
            booking = kind in BOOKING_KINDS
            for g in facts:
                if g[0] == appt and g[1] == kind and (not booking or g[2] == f[2]):
                    return False
        facts.append(f)
        self._prune(f[3], policy)
        return True

    def _prune(self, now: int, policy: Policy):
        cutoff = now - policy.retention_s
        keep = [g for g in self.facts if g[3] >= cutoff]
        over = len(keep) - policy.max_facts
        if over > 0:
            keep = keep[over:]
        self.facts = keep

    def cancelled(self, appt: str) -> bool:
        return any(g[0] == appt and (g[1] == K_PATIENT_CANCEL or g[1] == K_HOSPITAL_CANCEL)
                   for g in self.facts)

    def latest_version(self, appt: str) -> int:
        return max((g[2] for g in self.facts if g[0] == appt and g[1] in BOOKING_KINDS), default=0)


CODEC_VERSION = 1
MAX_ENCODED_FACTS = 100_000


class CorruptHistory(ValueError):
    pass


def _put_uvarint(out: bytearray, x: int):
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)


def _put_varint(out: bytearray, x: int):
    _put_uvarint(out, (x << 1) if x >= 0 else ((-x) << 1) - 1)  # zigzag, as Go's AppendVarint


def encode_facts(facts: Iterable[tuple]) -> bytes:
    facts = list(facts)
    out = bytearray((CODEC_VERSION,))
    _put_uvarint(out, len(facts))
    prev = 0
    for appt, kind, version, at, start in facts:
        a = appt.encode("utf-8", "surrogateescape")
        _put_uvarint(out, len(a))
        out += a
        out.append(ord(kind))
        _put_uvarint(out, version)
        _put_varint(out, at - prev)
        _put_varint(out, start)
        prev = at
    return bytes(out)


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    """Go's binary.Uvarint at b[i:]: (value, next index); CorruptHistory if malformed."""
    if i < len(b) and b[i] < 0x80:
        return b[i], i + 1
    x = shift = 0
    for j in range(i, min(i + 10, len(b))):
        c = b[j]
        if j - i == 9 and c > 1:
            raise CorruptHistory("varint overflows 64 bits")
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, j + 1
        shift += 7
    raise CorruptHistory("truncated varint")


def _varint(b: bytes, i: int) -> tuple[int, int]:
    ux, i = _uvarint(b, i)
    x = ux >> 1
    return (~x if ux & 1 else x), i


def decode_facts(b: bytes | None) -> list:
    if not b:
        return []
    if b[0] != CODEC_VERSION:
        raise CorruptHistory(f"format version {b[0]}, want {CODEC_VERSION}")
    n, i = _uvarint(b, 1)
    if n > MAX_ENCODED_FACTS or n > len(b) - 1:
        raise CorruptHistory("fact count")
    facts = []
    prev = 0
    for k in range(n):
        ln, i = _uvarint(b, i)
        if ln > len(b) - i:
            raise CorruptHistory(f"fact {k} appointment id")
        appt = b[i:i + ln].decode("utf-8", "surrogateescape")
        i += ln
        if i >= len(b):
            raise CorruptHistory(f"fact {k} truncated")
        kind = chr(b[i])
        version, i = _uvarint(b, i + 1)
        if version > 1 << 31:
            raise CorruptHistory(f"fact {k} version")
        d, i = _varint(b, i)
        start, i = _varint(b, i)
        prev += d
        facts.append((appt, kind, version, prev, start))
    if i != len(b):
        raise CorruptHistory(f"{len(b) - i} trailing bytes")
    return facts


def history_key(prefix: str, patient: str) -> str:
    return f"{prefix}{{{patient}}}:history"


# --------------------------------------------------------------------------------------------
# Features (featurestore/features.go): the one definition, ported line by line

NAMES = (
    "lead_time_days", "first_visit", "specialty", "age_band", "deprivation_decile", "weekday",
    "hour", "booking_version", "prior_appointments", "prior_dna", "prior_attended",
    "prior_dna_rate", "dna_last_365d", "days_since_last_dna", "days_since_last_attended",
    "prior_patient_cancellations", "prior_hospital_cancellations", "prior_reschedules",
    "open_bookings",
)
NAN = float("nan")
LONDON = ZoneInfo("Europe/London")
_SPECIALTY = re.compile(r"[+-]?[0-9]+", re.ASCII)  # what Go's strconv.Atoi accepts


def compute_features(ev: Appointment, h: History | None) -> list:
    """The features of booking ev given the patient's history, using only facts known at the
    booking's event time and none about its own appointment (featurestore.Compute)."""
    b = ev.booking
    as_of = ev.at
    own = ev.appointment_id

    # time.Duration.Hours() of start - booked_at, then / 24 (Go truncates the division)
    d = b.start_ns - b.booked_ns
    q, r = divmod(abs(d), HOUR_NS)
    if d < 0:
        q, r = -q, -r
    lead = (float(q) + float(r) / 3.6e12) / 24
    if lead < 0:
        lead = 0.0
    specialty = NAN
    if _SPECIALTY.fullmatch(b.specialty):
        code = int(b.specialty)
        if 0 <= code < 1 << 20:
            specialty = float(code)
    local = datetime.fromtimestamp(b.start_ns // NS, LONDON)

    dna = att = dna365 = pc = hc = resched = 0
    last_dna = last_att = None
    outcome: dict = {}
    outcome_at: dict = {}
    booked: dict = {}
    cancelled = set()
    if h is not None:
        for appt, kind, version, at, start in h.facts:
            # facts in the booking's own second are left out too (featurestore.Compute)
            if at >= as_of or appt == own:
                continue
            if kind == K_ATTENDED or kind == K_DNA:
                outcome[appt] = kind
                outcome_at[appt] = at
            elif kind == K_PATIENT_CANCEL:
                pc += 1
                cancelled.add(appt)
            elif kind == K_HOSPITAL_CANCEL:
                hc += 1
                cancelled.add(appt)
            elif kind == K_RESCHEDULED or kind == K_BOOKED:
                if kind == K_RESCHEDULED:
                    resched += 1
                # a late, superseded version does not move the appointment
                if appt not in booked or version >= booked[appt][0]:
                    booked[appt] = (version, start)
    year_ago = as_of - 365 * DAY
    for appt, kind in outcome.items():
        at = outcome_at[appt]
        if kind == K_DNA:
            dna += 1
            if at > year_ago:
                dna365 += 1
            if last_dna is None or at > last_dna:
                last_dna = at
        else:
            att += 1
            if last_att is None or at > last_att:
                last_att = at
    open_bookings = sum(1 for appt, (_, start) in booked.items()
                        if appt not in outcome and appt not in cancelled and start > as_of)
    return [
        lead,
        1.0 if b.first_visit else 0.0,
        specialty,
        float(AGE_BAND_INDEX.get(b.age_band, -1)),
        NAN if b.deprivation is None else float(b.deprivation),
        float(local.weekday()),  # Monday = 0
        float(local.hour),
        float(ev.version),
        float(dna + att),
        float(dna),
        float(att),
        dna / (dna + att) if dna + att > 0 else NAN,
        float(dna365),
        NAN if last_dna is None else (as_of - last_dna) / DAY,
        NAN if last_att is None else (as_of - last_att) / DAY,
        float(pc),
        float(hc),
        float(resched),
        float(open_bookings),
    ]


# --------------------------------------------------------------------------------------------
# Model (scoring/*.go): model.txt through lightgbm's Booster, contract.json, calibration, bands

class Model:
    def __init__(self, model_dir: str | Path, threads: int = 0):
        import lightgbm

        d = Path(model_dir)
        contract = json.loads((d / "contract.json").read_text())
        model_path = d / "model.txt"
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        want = contract.get("model_sha256")
        if want and want != digest:
            raise ValueError(f"{model_path} has SHA-256 {digest[:16]}… but contract.json says "
                             f"{want[:16]}…: the two files come from different models")
        self.booster = lightgbm.Booster(model_file=str(model_path))
        self.id = contract["model_id"]
        features = contract["features"]
        self.names = [f["name"] for f in features]
        if self.booster.feature_name() != self.names:
            raise ValueError(f"model.txt features {self.booster.feature_name()} differ from "
                             f"contract.json features {self.names}")
        index = {n: i for i, n in enumerate(NAMES)}
        # per model input: (index into compute_features' vector or None, extra key, categorical)
        self.inputs = []
        for f in features:
            name, cat = f["name"], f["type"] == "categorical"
            if name.startswith("extra."):
                self.inputs.append((None, name[len("extra."):], cat))
            else:
                self.inputs.append((index[name], None, cat))
        cal = contract.get("calibration")
        self.cal = (np.asarray(cal["x"], dtype=np.float64),
                    np.asarray(cal["y"], dtype=np.float64)) if cal else None
        bands = contract["risk_bands"]
        self.bands = [(b["name"], float(b["min_probability"])) for b in bands]
        self.pred_params = {"num_threads": threads} if threads > 0 else {}

    def vector(self, ev: Appointment, v: list) -> list:
        """The model input for ev (scoring.Model.Vector): contract order, booking extras by key,
        a missing or negative categorical value as -1 rather than NaN."""
        x = []
        for store, extra, cat in self.inputs:
            if store is not None:
                val = v[store]
            else:
                e = ev.booking.extra if ev.booking is not None else None
                val = e.get(extra, NAN) if e else NAN
            if cat and (val != val or val < 0 or val >= 2147483647):
                val = -1.0
            x.append(val)
        return x

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities for a (n, features) matrix: the trees, then the contract's calibration
        (piecewise linear between knots, flat outside them, like scoring.Calibration)."""
        p = self.booster.predict(rows, **self.pred_params)
        if self.cal is not None:
            p = np.interp(p, self.cal[0], self.cal[1])
        return p

    def band(self, p: float) -> str:
        for name, lo in reversed(self.bands[1:]):
            if p >= lo:
                return name
        return self.bands[0][0]

    def feature_map(self, x: list) -> dict:
        """The model's inputs by name, missing (NaN, or -1 for a categorical) left out."""
        out = {}
        for (store, extra, cat), name, val in zip(self.inputs, self.names, x):
            if val != val or (cat and val < 0):
                continue
            out[name] = val
        return out


# --------------------------------------------------------------------------------------------
# One batch: the work of scorer.Processor.Process, without Kafka or Redis

@dataclass(slots=True)
class Message:
    """What the batch logic needs of a Kafka message."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Outcome:
    risk: list = field(default_factory=list)          # (key, value) to the risk topic
    dead_letters: list = field(default_factory=list)  # (key, value) to the dead-letter topic
    dirty: dict = field(default_factory=dict)         # patient -> History to save
    scored: int = 0
    skipped: int = 0
    applied: int = 0
    # per risk event, for the parity test: (features as computed, model input, probability)
    trace: list = field(default_factory=list)


def _rfc3339_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dead_letter(m: Message, reason: str, code: str) -> bytes:
    b64 = lambda b: None if b is None else base64.b64encode(b).decode("ascii")  # noqa: E731
    return json.dumps({
        "schema": DEAD_LETTER_SCHEMA, "reason_code": code, "reason": reason, "topic": m.topic,
        "partition": m.partition, "offset": m.offset, "key": b64(m.key), "value": b64(m.value),
        "failed_at": _rfc3339_now(),
    }, separators=(",", ":")).encode()


def process_batch(msgs: list[Message], load: Callable[[list[str]], dict], model: Model,
                  policy: Policy = Policy(), predict: str = "batch",
                  keep_trace: bool = False) -> Outcome:
    """Decode, score and apply one batch. load(patients) returns {patient: History}. Bookings
    see the history as loaded, plus the batch's earlier events, minus their own event."""
    out = Outcome()
    evs = []
    patients = {}
    for m in msgs:
        try:
            ev = decode_appointment(m.value or b"")
            if (m.key or b"") != ev.patient.encode():
                raise InvalidEvent("message key is not the event's patient pseudonym "
                                   "(per-patient order depends on it)", "key_mismatch")
        except InvalidEvent as e:
            log.warning("dead-lettered appointment event topic=%s partition=%d offset=%d: %s",
                        m.topic, m.partition, m.offset, re.sub(r"\d+", "[digits]", str(e)))
            out.dead_letters.append((m.key, dead_letter(m, str(e), e.code)))
            continue
        evs.append(ev)
        patients[ev.patient] = True
    hist = load(list(patients))

    todo = []  # (event, computed features, model input)
    probs = []
    for ev in evs:
        h = hist[ev.patient]
        if ev.type in BOOKING_TYPES:
            if h.cancelled(ev.appointment_id) or h.latest_version(ev.appointment_id) > ev.version:
                out.skipped += 1
            else:
                v = compute_features(ev, h)
                x = model.vector(ev, v)
                todo.append((ev, v, x))
                if predict == "row":
                    probs.append(float(model.predict(np.array([x], dtype=np.float64))[0]))
        if h.apply(fact_of(ev), policy):
            out.applied += 1
            out.dirty[ev.patient] = h
    if todo and predict != "row":
        probs = model.predict(np.array([x for _, _, x in todo], dtype=np.float64)).tolist()

    scored_at = _rfc3339_now()
    for (ev, v, x), p in zip(todo, probs):
        risk = {
            "schema": RISK_SCHEMA, "appointment_id": ev.appointment_id,
            "booking_version": ev.version, "patient": ev.patient,
            "source_event_id": ev.event_id, "appointment_start": ev.booking.start_text,
            "probability": p, "risk_band": model.band(p), "model_id": model.id,
            "scored_at": scored_at, "features": model.feature_map(x),
        }
        out.risk.append((ev.patient.encode(), json.dumps(risk, separators=(",", ":")).encode()))
        if keep_trace:
            out.trace.append((v, x, p))
    out.scored = len(todo)
    return out


# --------------------------------------------------------------------------------------------
# Redis

class RedisHistories:
    """Patient histories in one Redis: one pipelined round trip to load a batch's, one to save."""

    def __init__(self, client, prefix: str, ttl_ms: int):
        self.r, self.prefix, self.ttl_ms = client, prefix, ttl_ms

    def load(self, patients: list[str]) -> dict:
        pipe = self.r.pipeline(transaction=False)
        for p in patients:
            pipe.hmget(history_key(self.prefix, p), "rev", "facts")
        out = {}
        for p, (rev, facts) in zip(patients, pipe.execute()):
            try:
                out[p] = History(int(rev) if rev is not None else 0, decode_facts(facts))
            except ValueError as e:
                raise CorruptHistory(f"history {history_key(self.prefix, p)}: {e}") from None
        return out

    def save(self, dirty: dict):
        """Write changed histories with rev+1. Unlike the Go store this is a plain HSET, not a
        compare-and-set: two members owning one partition at once can lose an update."""
        if not dirty:
            return
        pipe = self.r.pipeline(transaction=False)
        for p, h in dirty.items():
            key = history_key(self.prefix, p)
            pipe.hset(key, mapping={"rev": h.rev + 1, "facts": encode_facts(h.facts)})
            pipe.pexpire(key, self.ttl_ms)
        pipe.execute()
        for h in dirty.values():
            h.rev += 1


# --------------------------------------------------------------------------------------------
# Kafka loop

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--brokers", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    ap.add_argument("--group", default="dna-scorer-peer", help="consumer group")
    ap.add_argument("--topic-in", default="appointments", help="appointment.v1 input topic")
    ap.add_argument("--topic-risk", default="risk", help="risk.v1 output topic")
    ap.add_argument("--topic-dlq", default="appointments.dlq", help="dead-letter topic")
    ap.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port")
    ap.add_argument("--redis-prefix", default="dna:", help="prefix of every Redis key")
    ap.add_argument("--model-dir", default="models/default", help="model.txt and contract.json")
    ap.add_argument("--batch-size", type=int, default=500,
                    help="messages per consume() call; offsets are committed after each batch")
    ap.add_argument("--batch-wait", type=float, default=0.01,
                    help="seconds consume() waits to fill a batch")
    ap.add_argument("--predict", choices=("batch", "row"), default="batch",
                    help="one Booster.predict per batch (numpy matrix) or per booking")
    ap.add_argument("--predict-threads", type=int, default=1,
                    help="LightGBM num_threads for predict (0: LightGBM's default, OpenMP's "
                         "thread count, which is slow for small predictions on a busy machine)")
    ap.add_argument("--history-retention-days", type=int, default=3 * 365,
                    help="facts older than this are dropped; keys expire 30 days after it")
    ap.add_argument("--max-events", type=int, default=0,
                    help="exit after consuming this many messages (0: no limit)")
    ap.add_argument("--idle-exit", type=float, default=0,
                    help="exit when no message arrives for this many seconds after the first "
                         "(0: run until SIGINT/SIGTERM)")
    a = ap.parse_args(argv)
    if a.batch_size < 1 or a.history_retention_days < 1 or a.max_events < 0 or a.idle_exit < 0:
        ap.error("--batch-size and --history-retention-days must be positive, "
                 "--max-events and --idle-exit not negative")
    return a


def run(a) -> dict:
    import redis
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

    model = Model(a.model_dir, a.predict_threads)
    policy = Policy(retention_s=a.history_retention_days * DAY)
    host, _, port = a.redis.rpartition(":")
    store = RedisHistories(redis.Redis(host=host or "127.0.0.1", port=int(port)),
                           a.redis_prefix, (policy.retention_s + 30 * DAY) * 1000)
    consumer = Consumer({
        "bootstrap.servers": a.brokers, "group.id": a.group,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
    })
    producer = Producer({
        "bootstrap.servers": a.brokers, "acks": "all", "linger.ms": 2,
        "partitioner": "murmur2_random",  # the Java client's, as the Go writer uses
    })
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(err)

    def produce(topic, key, value, schema):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=[("schema", schema)],
                                 on_delivery=delivered)
                return
            except BufferError:
                producer.poll(0.1)

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))

    consumer.subscribe([a.topic_in])
    stats = {"consumed": 0, "scored": 0, "skipped": 0, "dead_lettered": 0, "applied": 0,
             "batches": 0}
    first = last_commit = last_msg = None
    last_log = time.monotonic()
    # seconds spent per phase, from the first message on (consume: waiting in consume())
    phase = dict.fromkeys(("consume", "process", "publish", "save", "commit"), 0.0)
    try:
        while not stop:
            n = a.batch_size
            if a.max_events:
                n = min(n, a.max_events - stats["consumed"])
                if n <= 0:
                    break
            t0 = time.monotonic()
            raw = consumer.consume(num_messages=n, timeout=a.batch_wait)
            now = time.monotonic()
            msgs = []
            for m in raw:
                err = m.error()
                if err is None:
                    msgs.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
                elif err.fatal():
                    raise KafkaException(err)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume: %s", err)
            if not msgs:
                if first is not None and a.idle_exit and now - last_msg >= a.idle_exit:
                    break
                continue
            if first is None:
                first = now
            else:
                phase["consume"] += now - t0
            last_msg = now

            res = process_batch(msgs, store.load, model, policy, a.predict)
            t1 = time.monotonic()
            for key, value in res.dead_letters:
                produce(a.topic_dlq, key, value, DEAD_LETTER_SCHEMA.encode())
            for key, value in res.risk:
                produce(a.topic_risk, key, value, RISK_SCHEMA.encode())
            if producer.flush(30) or failures:
                raise KafkaException(failures[0] if failures else "producer flush timed out")
            t2 = time.monotonic()
            store.save(res.dirty)
            t3 = time.monotonic()
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:  # partitions moved: the next owner re-consumes them
                log.error("commit failed: %s", e)
            last_commit = time.monotonic()
            phase["process"] += t1 - now
            phase["publish"] += t2 - t1
            phase["save"] += t3 - t2
            phase["commit"] += last_commit - t3

            stats["consumed"] += len(msgs)
            stats["scored"] += res.scored
            stats["skipped"] += res.skipped
            stats["dead_lettered"] += len(res.dead_letters)
            stats["applied"] += res.applied
            stats["batches"] += 1
            if last_commit - last_log >= 10:
                last_log = last_commit
                log.info("progress %s", json.dumps(stats))
    finally:
        consumer.close()
        producer.flush(10)
    elapsed = (last_commit - first) if first is not None else 0.0
    stats.update({
        "model_id": model.id, "predict": a.predict, "predict_threads": a.predict_threads,
        "batch_size": a.batch_size,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(stats["consumed"] / elapsed, 1) if elapsed > 0 else None,
        "phase_s": {k: round(v, 3) for k, v in phase.items()},
    })
    return stats


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    print(json.dumps(run(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
