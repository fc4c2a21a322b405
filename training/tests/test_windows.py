"""Windows by appointment date, test_from / test_to, the truncated-end rule and the DNA-rate
warning, on made-up frames whose answers are known."""

import numpy as np
import pandas as pd
import pytest

import windows


def frame(weeks=40, per_day=60, seed=0, first="2024-01-01", dna=0.1):
    """Stationary appointments: every day per_day rows, lead times log-normal (median ~40
    days) with 4% booked at short notice."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(first, periods=weeks * 7, freq="D", tz="Europe/London")
    start = np.repeat(days, rng.poisson(per_day, len(days)))
    n = len(start)
    lead = np.where(rng.random(n) < 0.04, rng.uniform(0, 2, n), rng.lognormal(3.7, 0.6, n))
    start = pd.DatetimeIndex(start) + pd.to_timedelta(rng.integers(8 * 60, 17 * 60, n), unit="min")
    df = pd.DataFrame({windows.START: start.tz_convert("UTC"), windows.LEAD: lead, windows.LABEL: (rng.random(n) < dna).astype(int)})
    df["_event_time"] = df[windows.START] - pd.to_timedelta(lead, unit="D")
    return windows.add_dates(df.sort_values("_event_time").reset_index(drop=True))


CFG = {"split": [0.7, 0.15, 0.15], "test_from": None, "test_to": None, "truncated_end": "exclude"}


def test_split_by_appointment_date_whole_days():
    df = frame()
    train, valid, test, info = windows.split(CFG, df)
    assert len(train) + len(valid) + len(test) == len(df)
    assert train[windows.DATE].max() < valid[windows.DATE].min() <= valid[windows.DATE].max() < test[windows.DATE].min()
    assert abs(len(test) / len(df) - 0.15) < 0.01 and abs(len(valid) / len(df) - 0.15) < 0.01
    # A booking made long before the test window whose appointment falls in it is a test row.
    early = test[test["_event_time"] < train[windows.START].max()]
    assert len(early) > 0
    for name, part in (("train", train), ("validation", valid), ("test", test)):
        w = info[name]
        assert w["rows"] == len(part) and w["from"] == part[windows.DATE].min().strftime("%Y-%m-%d")
        assert w["dna_rate"] == pytest.approx(part[windows.LABEL].mean())
    assert not info["truncated_end"]["truncated"] and info["warnings"] == []


@pytest.mark.parametrize("seed", range(8))
def test_no_false_truncation(seed):
    """The rule stays quiet on stationary data, small or large."""
    for per_day in (5, 60):
        t = windows.detect_truncated_end(frame(seed=seed, per_day=per_day))
        assert not t["truncated"], t["weeks"]


def test_test_from_and_test_to():
    df = frame()
    cfg = dict(CFG, test_from="2024-08-05", test_to="2024-09-01")
    train, valid, test, info = windows.split(cfg, df)
    assert test[windows.DATE].min() == pd.Timestamp("2024-08-05") and test[windows.DATE].max() <= pd.Timestamp("2024-09-01")
    assert valid[windows.DATE].max() < pd.Timestamp("2024-08-05")
    late = int((df[windows.DATE] > pd.Timestamp("2024-09-01")).sum())
    assert info["excluded"]["after_test_to"]["rows"] == late > 0
    assert len(train) + len(valid) + len(test) + late == len(df)
    with pytest.raises(ValueError, match="test_from"):
        windows.split(dict(CFG, test_from="2030-01-01"), df)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        windows.parse_date("test_from", "5 Aug 2024")


def test_truncated_end_short_notice():
    """An extract whose last three weeks kept only short-notice bookings (the rest of those
    weeks' appointments missing) is truncated from the first of them; the rows are left out."""
    df = frame()
    cut = df[windows.DATE].max() - pd.Timedelta(days=20)
    cut -= pd.Timedelta(days=cut.day_of_week)  # a Monday
    drop = (df[windows.DATE] >= cut) & (df[windows.LEAD] >= 2)
    df = df[~drop].reset_index(drop=True)
    train, valid, test, info = windows.split(CFG, df)
    t = info["truncated_end"]
    assert t["truncated"] and t["from"] == cut.strftime("%Y-%m-%d") and len(t["weeks"]) == 3
    assert any("short-notice share" in r for r in t["weeks"][0]["reasons"])
    assert info["excluded"]["truncated_end"]["rows"] == t["rows"] == int((df[windows.DATE] >= cut).sum())
    assert test[windows.DATE].max() < cut
    assert any("truncated" in w for w in info["warnings"])
    # "keep" keeps them in the test window and says so.
    _, _, test2, info2 = windows.split(dict(CFG, truncated_end="keep"), df)
    assert test2[windows.DATE].max() >= cut and "kept" in info2["truncated_end"]["action"] and "truncated_end" not in info2["excluded"]


def test_truncated_end_bookings_stop():
    """Bookings stop before appointments do (the simulator's end): the following weeks have no
    short-notice bookings, ever longer lead times and fewer rows."""
    df = frame(weeks=52)
    stop = pd.Timestamp("2024-10-01", tz="UTC")
    df = df[df["_event_time"] < stop]
    t = windows.detect_truncated_end(df)
    assert t["truncated"]
    first = pd.Timestamp(t["from"])
    assert pd.Timestamp("2024-09-23") <= first <= pd.Timestamp("2024-10-14"), t["from"]


def test_dna_rate_warning():
    df = frame()
    late = df[windows.DATE] >= df[windows.DATE].quantile(0.86)
    rng = np.random.default_rng(1)
    df.loc[late, windows.LABEL] = (rng.random(int(late.sum())) < 0.2).astype(int)  # 20% against 10%
    _, _, _, info = windows.split(CFG, df)
    assert any("differs from the training window" in w for w in info["warnings"])
