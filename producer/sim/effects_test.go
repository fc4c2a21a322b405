package sim

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/policy"
)

// Digests of two small worlds generated before drift and the reminder effect existed: with
// both options off the simulator must produce exactly these events and truths, so
// models/default and models/decision (trained on the simulator) are unchanged.
var goldenWorlds = []struct {
	cfg    Config
	events int
	digest string
}{
	{Config{Seed: 42, Patients: 500, Days: 60}, 883, "03d84caaa5033ac041e0c1664ee8625d2ec7920c635814c6c414572bf82a903e"},
	{Config{Seed: 42, Patients: 500, Days: 60, DNASinceBooking: true}, 883, "7760cba2729f0c9a195f9e90c297d9f68266c2525b1ac03a9ed104ebfb87a91b"},
}

var testHoldoutKey = []byte("sim-test-holdout-key-0123456789")

func TestEffectsOffChangeNothing(t *testing.T) {
	for _, w := range goldenWorlds {
		evs, truth := generate(t, w.cfg)
		if len(evs) != w.events || digest(t, evs, truth) != w.digest {
			t.Errorf("%+v: %d events, digest %s; want %d, %s (the default world changed)", w.cfg, len(evs), digest(t, evs, truth), w.events, w.digest)
		}
		for _, tr := range truth {
			if tr.PDrifted != tr.PDNA || tr.PUsed != tr.PDNA || tr.Eligible || tr.HeldOut {
				t.Fatalf("options off, truth %+v: want PDrifted = PUsed = PDNA, not eligible, not held out", tr)
			}
		}
		// Options set but with no effect (a drift after every appointment, a reminder with
		// efficacy 0): the same events, though the truths record eligibility and arms.
		c := w.cfg
		c.Drift = &Drift{From: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Specialty: "130", Factor: 2}
		c.Reminder = &ReminderEffect{Efficacy: 0, Holdout: policy.Holdout{Share: 0.2, Key: testHoldoutKey}, Threshold: 0.1}
		evs2, truth2 := generate(t, c)
		if len(evs2) != w.events || digest(t, evs2, truth2) != w.digest {
			t.Errorf("%+v with effect-free drift and reminder: events changed", w.cfg)
		}
	}
}

func TestEffectsValidate(t *testing.T) {
	from := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{Drift: &Drift{From: from, Specialty: "999", Factor: 2}}, `drift specialty "999"`},
		{Config{Drift: &Drift{From: from, Specialty: "130", Factor: 0}}, "drift factor 0"},
		{Config{Drift: &Drift{From: from, Specialty: "130", Factor: math.NaN()}}, "drift factor NaN"},
		{Config{Drift: &Drift{Specialty: "130", Factor: 2}}, "drift needs a From"},
		{Config{Reminder: &ReminderEffect{Efficacy: 1.5}}, "reminder efficacy 1.5"},
		{Config{Reminder: &ReminderEffect{Efficacy: 0.3, Threshold: -1}}, "reminder threshold -1"},
		{Config{Reminder: &ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.2, Key: []byte("short")}}}, "DNA_HOLDOUT_KEY"},
		{Config{Reminder: &ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.7, Key: testHoldoutKey}}}, "share 0.7 out of range"},
	}
	for _, b := range bad {
		err := b.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Validate(%+v) = %v, want an error with %q", b.cfg, err, b.want)
		}
	}
	ok := Config{Drift: &Drift{From: from, Specialty: "130", Factor: 2},
		Reminder: &ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.2, Key: testHoldoutKey}, Threshold: 0.1}}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", ok, err)
	}
}

// outcomeTruth is one appointment that reached an outcome, with the truth of the version
// whose outcome it is.
type outcomeTruth struct {
	Truth
	dna       bool
	specialty string
	start     time.Time
}

func outcomeTruths(t *testing.T, cfg Config) []outcomeTruth {
	t.Helper()
	evs, truth := generate(t, cfg)
	byVersion := map[[2]any]Truth{}
	for _, tr := range truth {
		byVersion[[2]any{tr.AppointmentID, tr.Version}] = tr
	}
	booking := map[[2]any]*events.Booking{}
	var out []outcomeTruth
	for _, ev := range evs {
		k := [2]any{ev.AppointmentID, ev.Version}
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			booking[k] = ev.Booking
		case events.Attended, events.DidNotAttend:
			b := booking[k]
			out = append(out, outcomeTruth{Truth: byVersion[k], dna: ev.Type == events.DidNotAttend, specialty: b.Specialty, start: b.Start})
		}
	}
	return out
}

// group sums outcomes, DNAs and truths over the rows keep selects.
type group struct{ n, dna, pDNA, pDrifted, pUsed float64 }

func sum(rows []outcomeTruth, keep func(outcomeTruth) bool) group {
	var g group
	for _, r := range rows {
		if keep(r) {
			g.n++
			g.pDNA += r.PDNA
			g.pDrifted += r.PDrifted
			g.pUsed += r.PUsed
			if r.dna {
				g.dna++
			}
		}
	}
	return g
}

// within reports whether the DNA count is within 4 standard deviations of its expectation,
// the sum of the probabilities the outcomes were drawn with (Poisson-binomial variance below
// the sum).
func within(dna, expected float64) bool { return math.Abs(dna-expected) <= 4*math.Sqrt(expected) }

// TestDrift: the drifted specialty's appointments starting on or after From end in a DNA
// about Factor times as often as their booking-time truth says; every other appointment as
// its truth says.
func TestDrift(t *testing.T) {
	from := time.Date(2025, 7, 1, 0, 0, 0, 0, london)
	cfg := Config{Seed: 17, Patients: 20000, Days: 365, Drift: &Drift{From: from, Specialty: "130", Factor: 2}}
	rows := outcomeTruths(t, cfg)
	drifted := func(r outcomeTruth) bool { return r.specialty == "130" && !r.start.Before(from) }
	in, before, other := sum(rows, drifted),
		sum(rows, func(r outcomeTruth) bool { return r.specialty == "130" && r.start.Before(from) }),
		sum(rows, func(r outcomeTruth) bool { return r.specialty != "130" })
	t.Logf("drifted: %.0f outcomes, DNA rate %.4f, booking-time truth %.4f (observed/truth %.3f), drifted truth %.4f; same specialty before: %.0f, %.4f vs %.4f; others: %.0f, %.4f vs %.4f",
		in.n, in.dna/in.n, in.pDNA/in.n, in.dna/in.pDNA, in.pDrifted/in.n, before.n, before.dna/before.n, before.pDNA/before.n, other.n, other.dna/other.n, other.pDNA/other.n)
	if in.n < 5000 {
		t.Fatalf("only %.0f drifted outcomes", in.n)
	}
	if r := in.dna / in.pDNA; r < 1.8 || r > 2.2 || !within(in.dna, in.pDrifted) {
		t.Errorf("drifted appointments: %.0f DNAs, %.3f times the booking-time truth's %.1f and against %.1f drifted; want about 2 times",
			in.dna, r, in.pDNA, in.pDrifted)
	}
	if !within(before.dna, before.pDNA) || !within(other.dna, other.pDNA) {
		t.Errorf("undrifted appointments moved: same specialty before From %.0f DNAs for truth %.1f; others %.0f for %.1f", before.dna, before.pDNA, other.dna, other.pDNA)
	}
	for _, r := range rows {
		want := r.PDNA
		if drifted(r) {
			want = math.Min(2*r.PDNA, MaxDriftedP)
		}
		if r.PDrifted != want || r.PUsed != r.PDrifted {
			t.Fatalf("truth %+v of a %s appointment at %s: want PDrifted = PUsed = %v", r.Truth, r.specialty, r.start, want)
		}
	}
}

// TestReminderEffect: eligible bookings that are not held out end in a DNA about
// (1 - Efficacy) times as often as their truth before the effect says; held-out and
// ineligible ones as it says; about Share of appointments are held out; and the arms'
// observed relative difference matches TrueEffect.
func TestReminderEffect(t *testing.T) {
	for _, dnaSince := range []bool{false, true} {
		eff := &ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.2, Key: testHoldoutKey}, Threshold: 0.1}
		rows := outcomeTruths(t, Config{Seed: 19, Patients: 20000, Days: 365, Reminder: eff, DNASinceBooking: dnaSince})
		reminded := sum(rows, func(r outcomeTruth) bool { return r.Eligible && !r.HeldOut })
		heldOut := sum(rows, func(r outcomeTruth) bool { return r.Eligible && r.HeldOut })
		ineligible := sum(rows, func(r outcomeTruth) bool { return !r.Eligible })
		all := sum(rows, func(outcomeTruth) bool { return true })
		held := sum(rows, func(r outcomeTruth) bool { return r.HeldOut })
		t.Logf("DNASinceBooking %v: %.0f outcomes, %.1f%% eligible, %.2f%% held out; eligible reminded: %.0f, DNA/truth %.3f; eligible held out: %.0f, %.3f; ineligible: %.0f, %.3f",
			dnaSince, all.n, 100*(reminded.n+heldOut.n)/all.n, 100*held.n/all.n, reminded.n, reminded.dna/reminded.pDrifted, heldOut.n, heldOut.dna/heldOut.pDrifted, ineligible.n, ineligible.dna/ineligible.pDrifted)
		if sd := math.Sqrt(0.2 * 0.8 / all.n); math.Abs(held.n/all.n-0.2) > 4*sd {
			t.Errorf("held-out share %.4f, want 0.2 within %.4f", held.n/all.n, 4*sd)
		}
		if heldOut.n < 1000 || reminded.n < 4000 {
			t.Fatalf("too few eligible outcomes: %.0f reminded, %.0f held out", reminded.n, heldOut.n)
		}
		if dnaSince {
			// The DNAs since booking raise the probabilities beyond the truths; compare the arms.
			r := 1 - (reminded.dna/reminded.pDrifted)/(heldOut.dna/heldOut.pDrifted)
			se := math.Sqrt(1/reminded.dna + 1/heldOut.dna)
			if math.Abs(r-0.3) > 4*se*0.7 {
				t.Errorf("relative reduction between the eligible arms %.3f, want 0.3 within %.3f", r, 4*se*0.7)
			}
			continue
		}
		if !within(reminded.dna, reminded.pUsed) || !within(heldOut.dna, heldOut.pDrifted) || !within(ineligible.dna, ineligible.pDrifted) {
			t.Errorf("DNAs: reminded %.0f for %.1f expected (truth before effect %.1f), held out %.0f for %.1f, ineligible %.0f for %.1f",
				reminded.dna, reminded.pUsed, reminded.pDrifted, heldOut.dna, heldOut.pDrifted, ineligible.dna, ineligible.pDrifted)
		}
		if math.Abs(reminded.pUsed/reminded.pDrifted-0.7) > 1e-9 {
			t.Errorf("reminded bookings: PUsed/PDrifted %.6f, want 0.7", reminded.pUsed/reminded.pDrifted)
		}
		// The whole population: the arms differ by the true relative effect, which counts
		// the ineligible bookings (no effect) in both arms.
		truths := make([]Truth, len(rows))
		for i, r := range rows {
			truths[i] = r.Truth
		}
		want := eff.TrueEffect(truths, nil)
		armRate := func(held bool) (float64, float64) {
			g := sum(rows, func(r outcomeTruth) bool { return r.HeldOut == held })
			return g.dna / g.n, g.dna
		}
		rRem, dRem := armRate(false)
		rHeld, dHeld := armRate(true)
		got := 1 - rRem/rHeld
		se := (1 - got) * math.Sqrt(1/dRem+1/dHeld)
		t.Logf("all outcomes: true relative effect %.4f (absolute %.5f), observed %.4f ± %.4f", want.Relative, want.Absolute, got, 1.96*se)
		if want.N != len(rows) || want.Relative <= 0 || want.Relative >= 0.3 || math.Abs(got-want.Relative) > 4*se {
			t.Errorf("relative effect between arms observed %.4f, TrueEffect %+v", got, want)
		}
	}
}

func TestTrueEffect(t *testing.T) {
	eff := &ReminderEffect{Efficacy: 0.4}
	truths := []Truth{
		{PDrifted: 0.2, Eligible: true},
		{PDrifted: 0.1, Eligible: true, HeldOut: true},
		{PDrifted: 0.05},
		{PDrifted: 0.15},
	}
	got := eff.TrueEffect(truths, nil)
	if got.N != 4 || math.Abs(got.Relative-0.4*0.3/0.5) > 1e-12 || math.Abs(got.Absolute-0.4*0.3/4) > 1e-12 {
		t.Errorf("TrueEffect = %+v, want N 4, relative 0.24, absolute 0.03", got)
	}
	if got := eff.TrueRelativeEffect(truths, func(t Truth) bool { return t.Eligible }); math.Abs(got-0.4) > 1e-12 {
		t.Errorf("among eligible bookings only: %v, want the efficacy 0.4", got)
	}
	if got := eff.TrueEffect(nil, nil); got != (TrueEffect{}) {
		t.Errorf("empty set: %+v", got)
	}
	var none *ReminderEffect
	if got := none.TrueRelativeEffect(truths, nil); got != 0 {
		t.Errorf("no reminder effect: %v", got)
	}
}

func TestFullTruthFileRoundTrip(t *testing.T) {
	_, truth := generate(t, Config{Seed: 3, Patients: 300, Days: 60,
		Drift:    &Drift{From: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), Specialty: "110", Factor: 3},
		Reminder: &ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.5, Key: testHoldoutKey}, Threshold: 0.08}})
	var buf strings.Builder
	tw := NewFullTruthWriter(&buf)
	eligible, held, drifted := 0, 0, 0
	for _, tr := range truth {
		tw.Write(tr)
		if tr.Eligible {
			eligible++
		}
		if tr.HeldOut {
			held++
		}
		if tr.PDrifted != tr.PDNA {
			drifted++
		}
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	if eligible == 0 || held == 0 || drifted == 0 {
		t.Fatalf("the world has %d eligible, %d held-out, %d drifted truths: not a test of the full layout", eligible, held, drifted)
	}
	if !strings.HasPrefix(buf.String(), "appointment_id,booking_version,p_dna,p_drifted,eligible,held_out,p_used\n") {
		t.Fatalf("truth file starts %q", buf.String()[:80])
	}
	got, err := ReadTruth(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, truth) {
		t.Fatal("truth changed in a round trip through the full layout")
	}
	head := strings.Join(truthFullHeader, ",") + "\n"
	for _, bad := range []string{head + "x,1,0.1,0.2,maybe,false,0.2\n", head + "x,1,0.1,2,true,false,0.2\n", head + "x,1,0.1,0.2,true,false\n"} {
		if _, err := ReadTruth(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadTruth(%q) succeeded", bad)
		}
	}
}
