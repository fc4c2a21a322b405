#!/usr/bin/env python3
"""Write simulator events as a historical appointments CSV (docs/csv.md), to try
`make model DATA=...` on something the size of a trust's export:

  DNA_PSEUDONYM_SECRET=training-only-not-a-secret-000000 \\
    go run ./cmd/producer --source sim --patients 20000 --days 365 --out events.jsonl
  python training/sim_to_csv.py events.jsonl appointments.csv [--bad-rows 0.005]
  make model DATA=appointments.csv CONFIG=training/config.example.json

One row per appointment, as a PAS export has: the last booking version's time and start
(reschedules fold into it), and the appointment's outcome. Two extra columns are added:
distance_km (numeric) and interpreter_needed (a 0/1 code, declared categorical in
training/config.example.json). They are drawn per patient, independent of the outcome, so a
model should find no use for them. --bad-rows spoils that share of rows in the ways docs/csv.md
lists (bad age band, unknown outcome, unreadable time, text in an extra column) so the bad-row
report can be seen.
"""

import argparse
import csv
import hashlib
import json
import random
import sys

LONDON_NOTE = "times are written RFC 3339 in UTC, which csvimport accepts"


def patient_extras(pseudonym):
    h = int(hashlib.sha256(pseudonym.encode()).hexdigest()[:12], 16)
    rng = random.Random(h)
    return round(rng.lognormvariate(2.3, 0.7), 1), int(rng.random() < 0.06)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("events", help="JSONL events from cmd/producer --source sim --out")
    ap.add_argument("csv", help="CSV to write")
    ap.add_argument("--bad-rows", type=float, default=0.005, help="share of rows to spoil (default 0.005)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    appts = {}
    order = []
    with open(args.events) as f:
        for line in f:
            ev = json.loads(line)
            a = appts.get(ev["appointment_id"])
            if a is None:
                a = appts[ev["appointment_id"]] = {"patient": ev["patient"]}
                order.append(ev["appointment_id"])
            t = ev["type"]
            if t in ("booked", "rescheduled"):
                a["booking"], a["booked_at"] = ev["booking"], ev["event_time"]
            elif t == "cancelled":
                a["outcome"] = "cancelled_by_" + ev.get("cancelled_by", "patient")
                a["cancelled_at"] = ev["event_time"]
            elif t in ("attended", "did_not_attend"):
                a["outcome"] = t

    rng = random.Random(args.seed)
    spoilers = [
        ("age_band", "90+"),
        ("outcome", "no_show"),
        ("booked_at", "yesterday"),
        ("distance_km", "far"),
    ]
    header = ["patient_id", "appointment_id", "booked_at", "appointment_start", "outcome", "specialty", "clinic",
              "first_visit", "age_band", "deprivation_decile", "sms_opt_in", "cancelled_at", "distance_km", "interpreter_needed"]
    n = bad = 0
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for appt_id in order:
            a = appts[appt_id]
            b = a.get("booking")
            if b is None:
                continue
            dist, interp = patient_extras(a["patient"])
            row = {
                "patient_id": a["patient"][:20],
                "appointment_id": appt_id,
                "booked_at": a["booked_at"],
                "appointment_start": b["start"],
                "outcome": a.get("outcome", ""),
                "specialty": b["specialty"],
                "clinic": b.get("clinic", ""),
                "first_visit": "true" if b.get("first_visit") else "false",
                "age_band": b["age_band"],
                "deprivation_decile": b.get("deprivation_decile", ""),
                "sms_opt_in": "true" if b.get("contact", {}).get("sms") else "false",
                "cancelled_at": a.get("cancelled_at", "") if a.get("outcome", "").startswith("cancelled") else "",
                "distance_km": dist,
                "interpreter_needed": interp,
            }
            if rng.random() < args.bad_rows:
                col, val = spoilers[bad % len(spoilers)]
                row[col] = val
                bad += 1
            w.writerow(row)
            n += 1
    print(f"sim_to_csv: {n} rows ({bad} spoiled on purpose) -> {args.csv}; {LONDON_NOTE}", file=sys.stderr)


if __name__ == "__main__":
    main()
