"""A hand-made appointments CSV in the layout of docs/csv.md, not from the simulator: its own
patients, its own risk model (lead time, age, deprivation, earlier DNAs) and extra columns
(sex as text F/M, distance_km, and optionally a leaky whole-extract DNA count per patient)."""

import csv
import datetime as dt
import math
import random

AGE_BANDS = ["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+"]
AGE_EFFECT = [0.2, 0.6, 0.4, 0.2, 0.0, -0.2, -0.4, -0.3, 0.0]
SPECIALTIES = ["100", "110", "130", "300", "320", "502", "710"]


def write(path, patients=900, seed=1, leaky=False, first=dt.date(2024, 1, 1), days=366):
    """Writes the CSV; returns its rows (dicts) in file order. Appointments fall on the days
    [first, first + days); bookings may precede first (the extract is cut at appointment dates)."""
    rng = random.Random(seed)
    rows = []
    for p in range(patients):
        pid = f"99900{p:05d}"
        age = rng.choices(range(9), weights=[8, 6, 10, 11, 13, 15, 15, 14, 8])[0]
        decile = rng.randint(1, 10) if rng.random() > 0.05 else None
        sex = rng.choice(["F", "M"])  # text: trainset learns its code list
        dist = round(rng.lognormvariate(2.2, 0.6), 1)
        n = max(1, int(rng.expovariate(1 / 5)))
        starts = sorted(first + dt.timedelta(days=rng.randrange(days)) for _ in range(n))
        history = []  # (outcome time, dna)
        for i, day in enumerate(starts):
            start = dt.datetime.combine(day, dt.time(8 + rng.randrange(9), rng.choice([0, 15, 30, 45])))
            lead = rng.choice([0.2, 1, 3, 7]) if rng.random() < 0.1 else rng.lognormvariate(3.6, 0.7)
            booked = start - dt.timedelta(days=lead)
            prior = [d for t, d in history if t < booked]
            z = (-2.6 + 0.35 * math.log1p(lead) - 0.9 + AGE_EFFECT[age] + 0.06 * (10 - (decile or 5))
                 + 1.2 * (sum(prior) + 0.2) / (len(prior) + 1.5))
            dna = rng.random() < 1 / (1 + math.exp(-z))
            cancelled = rng.random() < 0.05
            outcome = "cancelled_by_patient" if cancelled else ("did_not_attend" if dna else "attended")
            if not cancelled:
                history.append((start, int(dna)))
            rows.append({"patient_id": pid, "appointment_id": f"HM{p:05d}-{i}", "booked_at": booked.strftime("%Y-%m-%d %H:%M"),
                         "appointment_start": start.strftime("%Y-%m-%d %H:%M"), "outcome": outcome,
                         "specialty": rng.choice(SPECIALTIES), "age_band": AGE_BANDS[age],
                         "deprivation_decile": "" if decile is None else decile, "sms_opt_in": rng.choice(["true", "true", "false"]),
                         "sex": sex, "distance_km": dist})
        if leaky:
            total = sum(d for _, d in history)
            for r in rows:
                if r["patient_id"] == pid:
                    r["dna_count_total"] = total
    fields = list(rows[0].keys()) + (["dna_count_total"] if leaky and "dna_count_total" not in rows[0] else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows
