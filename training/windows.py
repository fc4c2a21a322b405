"""Training, validation and test windows by APPOINTMENT date, and the truncated-end check.

A model is used on bookings whose appointments are still to come, so it is evaluated on the
latest appointments: every row (a booking's final version, labelled with its outcome) falls
in the window of its appointment's date (UK local date, Europe/London). Splitting by booking
time instead puts, in the last window of an extract cut at an appointment date, mostly
same-day bookings whose outcomes happened to be known: an optimistic, unrepresentative test.

An extract's end can also be unlike the rest in another way: bookings stop before
appointments do (a simulator, or an extract of bookings made up to a date), or the last
weeks' outcomes are not all recorded yet. detect_truncated_end finds such an end by a fixed
rule (TRUNCATION_RULE, also printed on the card) and split leaves it out of every window
unless the config says "truncated_end": "keep".
"""

import datetime as dt
import math

import numpy as np
import pandas as pd

TZ = "Europe/London"
START = "_appointment_start"  # the trainset's appointment_start column, renamed by train.py
DATE = "_appointment_date"  # its UK local date (midnight, no zone)
LEAD = "lead_time_days"
LABEL = "label"

SHORT_NOTICE_DAYS = 2  # a booking made less than 2 days before its appointment
MIN_ROWS_FOR_MEDIAN = 30

TRUNCATION_RULE = (
    "Appointment weeks (Monday to Sunday, UK dates) are compared with a reference: the middle half of all rows "
    "by appointment date. A week is unlike the reference when (a) its share of short-notice bookings (booked less "
    f"than {SHORT_NOTICE_DAYS} days before the appointment) is below half or above twice the reference share, by "
    "more than 3 binomial standard errors; or (b) it has at least "
    f"{MIN_ROWS_FOR_MEDIAN} rows and its median lead time is below half or above twice the reference median; or "
    "(c) it has fewer than half the rows the reference rate of rows per day predicts, by more than 3 Poisson "
    "standard deviations. The end of the extract is truncated when its last week is unlike the reference; the "
    "truncated end is the run of consecutive unlike weeks that ends with the last week."
)


def add_dates(df):
    """Adds the appointment's UK local date (DATE) from START (UTC)."""
    local = df[START].dt.tz_convert(TZ)
    df[DATE] = local.dt.tz_localize(None).dt.normalize()
    return df


def parse_date(name, s):
    """A config date "YYYY-MM-DD" as a Timestamp (midnight, no zone)."""
    try:
        return pd.Timestamp(dt.date.fromisoformat(s))
    except (TypeError, ValueError):
        raise ValueError(f"{name} {s!r}: want a date as \"YYYY-MM-DD\" (a UK appointment date)") from None


def day(ts):
    return None if ts is None or pd.isna(ts) else ts.strftime("%Y-%m-%d")


def detect_truncated_end(df):
    """Applies TRUNCATION_RULE to df (with DATE and LEAD). Returns a dict for the card:
    truncated, from (the first date of the truncated end), rows, weeks (each unlike week with
    its numbers and reasons), reference, rule."""
    d = df.sort_values(DATE, kind="stable")
    dates, lead = d[DATE].to_numpy(), d[LEAD].to_numpy(float)
    n = len(d)
    out = {"rule": TRUNCATION_RULE, "truncated": False, "from": None, "rows": 0, "weeks": []}
    if n < 40:
        out["note"] = f"too few rows ({n}) to compare weeks"
        return out
    mid = slice(n // 4, 3 * n // 4)
    ref_lead = lead[mid]
    ref_known = ref_lead[~np.isnan(ref_lead)]
    ref_short = float((ref_known < SHORT_NOTICE_DAYS).mean()) if len(ref_known) else math.nan
    ref_median = float(np.median(ref_known)) if len(ref_known) else math.nan
    span = (pd.Timestamp(dates[mid][-1]) - pd.Timestamp(dates[mid][0])).days + 1
    ref_per_day = (mid.stop - mid.start) / span
    out["reference"] = {
        "from": day(pd.Timestamp(dates[mid][0])), "to": day(pd.Timestamp(dates[mid][-1])), "rows": mid.stop - mid.start,
        "short_notice_share": ref_short, "median_lead_days": ref_median, "rows_per_day": ref_per_day,
    }
    first, last = pd.Timestamp(dates[0]), pd.Timestamp(dates[-1])
    week = d[DATE] - pd.to_timedelta(d[DATE].dt.day_of_week, unit="D")
    weeks = []
    for w, idx in d.groupby(week, sort=True).indices.items():
        w = pd.Timestamp(w)
        x = lead[idx]
        x = x[~np.isnan(x)]
        rows = len(idx)
        days = (min(w + pd.Timedelta(days=6), last) - max(w, first)).days + 1
        short = float((x < SHORT_NOTICE_DAYS).mean()) if len(x) else math.nan
        median = float(np.median(x)) if len(x) else math.nan
        reasons = []
        if len(x) and ref_short == ref_short:
            se = math.sqrt(max(ref_short * (1 - ref_short), 1e-12) / len(x))
            if (short < ref_short / 2 or short > 2 * ref_short) and abs(short - ref_short) > 3 * se:
                reasons.append(f"short-notice share {short:.1%} against {ref_short:.1%}")
        if len(x) >= MIN_ROWS_FOR_MEDIAN and ref_median > 0 and (median < ref_median / 2 or median > 2 * ref_median):
            reasons.append(f"median lead time {median:.1f} days against {ref_median:.1f}")
        expect = ref_per_day * days
        if rows < expect / 2 and expect - rows > 3 * math.sqrt(expect):
            reasons.append(f"{rows} rows against {expect:.0f} expected for {days} day(s)")
        weeks.append({"week": day(w), "days": days, "rows": rows, "short_notice_share": short, "median_lead_days": median,
                      "dna_rate": float(d[LABEL].to_numpy()[idx].mean()), "reasons": reasons})
    tail = []
    for wk in reversed(weeks):
        if not wk["reasons"]:
            break
        tail.append(wk)
    tail.reverse()
    if tail:
        out.update(truncated=True, weeks=tail, rows=sum(w["rows"] for w in tail))
        out["from"] = max(tail[0]["week"], day(first))
    return out


def share_dna(part):
    return float(part[LABEL].mean()) if len(part) else math.nan


def describe(part):
    """A window for the card: its first and last appointment dates, rows, DNA rate."""
    if not len(part):
        return {"from": None, "to": None, "rows": 0, "dna_rate": None}
    return {"from": day(part[DATE].min()), "to": day(part[DATE].max()), "rows": int(len(part)), "dna_rate": share_dna(part)}


def split(cfg, df):
    """Splits df (with DATE) into train, validation and test by appointment date. Returns
    (train, valid, test, info); info is the card's "windows" section. Raises ValueError with a
    message a person can act on."""
    df = df.sort_values([DATE, START], kind="stable")
    info = {"by": "appointment date (UK)", "excluded": {}}
    test_to = parse_date("test_to", cfg["test_to"]) if cfg.get("test_to") else None
    if test_to is not None:
        late = df[DATE] > test_to
        if late.all():
            raise ValueError(f"test_to {cfg['test_to']} is before the first appointment ({day(df[DATE].min())})")
        info["excluded"]["after_test_to"] = {"from": day(test_to + pd.Timedelta(days=1)), "rows": int(late.sum())}
        df = df[~late]
    trunc = detect_truncated_end(df)
    info["truncated_end"] = trunc
    if trunc["truncated"]:
        keep = cfg.get("truncated_end", "exclude") == "keep"
        trunc["action"] = "kept in the test window (truncated_end = \"keep\")" if keep else "left out of every window"
        if not keep:
            tail = df[DATE] >= pd.Timestamp(trunc["from"])
            info["excluded"]["truncated_end"] = {"from": trunc["from"], "rows": int(tail.sum())}
            df = df[~tail]
    n = len(df)
    if n == 0:
        raise ValueError("no rows left once the truncated end was left out")
    s = cfg["split"]
    dates = df[DATE].to_numpy()
    if cfg.get("test_from"):
        test_from = parse_date("test_from", cfg["test_from"])
        if not (pd.Timestamp(dates[0]) < test_from <= pd.Timestamp(dates[-1])):
            raise ValueError(f"test_from {cfg['test_from']}: want a date after the first appointment ({day(pd.Timestamp(dates[0]))}) "
                             f"and on or before the last one used ({day(pd.Timestamp(dates[-1]))})")
        before = int((df[DATE] < test_from).sum())
        valid_from = pd.Timestamp(dates[int(before * s[0] / (s[0] + s[1]))])
        info["test_from_source"] = "config test_from"
    else:
        test_from = pd.Timestamp(dates[min(n - 1, int(n * (s[0] + s[1])))])
        valid_from = pd.Timestamp(dates[int(n * s[0])])
        info["test_from_source"] = f"split {s} of the rows by appointment date, at whole days"
    train = df[df[DATE] < valid_from]
    valid = df[(df[DATE] >= valid_from) & (df[DATE] < test_from)]
    test = df[df[DATE] >= test_from]
    info.update(train=describe(train), validation=describe(valid), test=describe(test))
    warnings = []
    tr, te = share_dna(train), share_dna(test)
    if len(train) and len(test) and tr > 0 and abs(te - tr) > tr / 3:
        warnings.append(f"The test window's DNA rate ({te:.1%}) differs from the training window's ({tr:.1%}) by more than a third: "
                        "the population, the booking mix or the recording of outcomes changed, and the test figures may not "
                        "describe the model on future bookings.")
    if trunc["truncated"]:
        wk = trunc["weeks"]
        warnings.append(f"The end of the extract is truncated: the appointments from {trunc['from']} ({trunc['rows']:,} rows, "
                        f"{len(wk)} week(s)) are unlike the rest ({'; '.join(wk[0]['reasons'])} in the week of {wk[0]['week']}); "
                        f"they were {trunc['action']}.")
    info["warnings"] = warnings
    return train, valid, test, info
