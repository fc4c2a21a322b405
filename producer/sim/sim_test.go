package sim

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
)

func testPseudonymiser(tb testing.TB) *pseudo.Pseudonymiser {
	tb.Helper()
	ps, err := pseudo.New([]byte("sim-test-secret-0123456789abcdef"))
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

func generate(tb testing.TB, cfg Config) ([]events.Appointment, []Truth) {
	tb.Helper()
	g, err := New(cfg, testPseudonymiser(tb))
	if err != nil {
		tb.Fatal(err)
	}
	var evs []events.Appointment
	var truth []Truth
	for ev, tr := range g.All() {
		evs = append(evs, ev)
		if tr != nil {
			truth = append(truth, *tr)
		}
	}
	return evs, truth
}

func digest(tb testing.TB, evs []events.Appointment, truth []Truth) string {
	tb.Helper()
	h := sha256.New()
	enc := json.NewEncoder(h)
	for i := range evs {
		if err := enc.Encode(&evs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	for _, t := range truth {
		fmt.Fprintf(h, "%s,%d,%v\n", t.AppointmentID, t.Version, t.PDNA)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestDeterministic(t *testing.T) {
	small := Config{Patients: 300, Days: 60}
	run := func(seed int64) string {
		c := small
		c.Seed = seed
		evs, truth := generate(t, c)
		if len(evs) == 0 {
			t.Fatalf("seed %d generated no events", seed)
		}
		return digest(t, evs, truth)
	}
	a1, a2, b := run(7), run(7), run(8)
	if a1 != a2 {
		t.Error("same seed gave different output")
	}
	if a1 == b {
		t.Error("different seeds gave the same output")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero value is the default demo", Config{}, true},
		{"negative patients", Config{Patients: -1}, false},
		{"too many patients", Config{Patients: MaxPatients + 1}, false},
		{"negative days", Config{Days: -5}, false},
		{"NaN rate", Config{BookingsPerYear: math.NaN()}, false},
		{"start in 1970", Config{Start: time.Unix(0, 0)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New with nil pseudonymiser succeeded")
	}
}

// TestStreamContract checks ordering, the per-appointment lifecycle, the event contract and
// the truth records over several worlds.
func TestStreamContract(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"default demo", Config{Seed: 1}},
		{"few heavy users over two years", Config{Seed: 2, Patients: 50, Days: 730, BookingsPerYear: 40}},
		{"start mid-day across the spring clock change", Config{Seed: 3, Patients: 500, Days: 30,
			Start: time.Date(2024, 3, 20, 15, 4, 5, 0, time.UTC)}},
		{"one patient", Config{Seed: 4, Patients: 1, Days: 3650, BookingsPerYear: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, truth := generate(t, tt.cfg)
			if len(evs) == 0 {
				t.Fatal("no events")
			}
			checkContract(t, evs, truth)
		})
	}
}

func checkContract(t *testing.T, evs []events.Appointment, truth []Truth) {
	t.Helper()
	type state struct {
		patient  string
		version  int
		start    time.Time
		terminal bool
	}
	appts := map[string]*state{}
	ids := map[string]bool{}
	truthOf := map[string]float64{}
	for _, tr := range truth {
		if !(tr.PDNA > 0 && tr.PDNA < 1) {
			t.Fatalf("truth %s v%d: p=%v outside (0,1)", tr.AppointmentID, tr.Version, tr.PDNA)
		}
		truthOf[fmt.Sprint(tr.AppointmentID, "/", tr.Version)] = tr.PDNA
	}
	if len(truthOf) != len(truth) {
		t.Fatalf("%d truth records for %d distinct versions", len(truth), len(truthOf))
	}
	bookings := 0
	for i := range evs {
		ev := &evs[i]
		if err := ev.Validate(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i > 0 && ev.EventTime.Before(evs[i-1].EventTime) {
			t.Fatalf("event %d at %s before event %d at %s", i, ev.EventTime, i-1, evs[i-1].EventTime)
		}
		if ev.EventTime.Location() != time.UTC || (ev.Booking != nil && (ev.Booking.Start.Location() != time.UTC || ev.Booking.BookedAt.Location() != time.UTC)) {
			t.Fatalf("event %d: times not in UTC", i)
		}
		if ids[ev.EventID] {
			t.Fatalf("event %d: duplicate event_id %s", i, ev.EventID)
		}
		ids[ev.EventID] = true
		s := appts[ev.AppointmentID]
		switch ev.Type {
		case events.Booked:
			if s != nil {
				t.Fatalf("appointment %s booked twice", ev.AppointmentID)
			}
			s = &state{patient: ev.Patient}
			appts[ev.AppointmentID] = s
		case events.Rescheduled:
			if s == nil || s.terminal {
				t.Fatalf("appointment %s rescheduled before booking or after its end", ev.AppointmentID)
			}
		default:
			if s == nil || s.terminal {
				t.Fatalf("appointment %s: %s before booking or after its end", ev.AppointmentID, ev.Type)
			}
			if ev.Version != s.version {
				t.Fatalf("appointment %s: %s names version %d, latest is %d", ev.AppointmentID, ev.Type, ev.Version, s.version)
			}
			s.terminal = true
			if ev.Type == events.Cancelled && !ev.EventTime.Before(s.start) {
				t.Fatalf("appointment %s cancelled at %s, not before its start %s", ev.AppointmentID, ev.EventTime, s.start)
			}
			if ev.Type != events.Cancelled && ev.EventTime.Before(s.start) {
				t.Fatalf("appointment %s: outcome at %s before start %s", ev.AppointmentID, ev.EventTime, s.start)
			}
		}
		if ev.Patient != s.patient {
			t.Fatalf("appointment %s changed patient", ev.AppointmentID)
		}
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			bookings++
			if ev.Version != s.version+1 {
				t.Fatalf("appointment %s: version %d after %d", ev.AppointmentID, ev.Version, s.version)
			}
			if s.version > 0 && !ev.EventTime.Before(s.start) {
				t.Fatalf("appointment %s rescheduled at %s, not before the old start %s", ev.AppointmentID, ev.EventTime, s.start)
			}
			b := ev.Booking
			if !b.BookedAt.Equal(ev.EventTime) || !b.Start.After(b.BookedAt) {
				t.Fatalf("appointment %s v%d: booked_at %s, start %s, event %s", ev.AppointmentID, ev.Version, b.BookedAt, b.Start, ev.EventTime)
			}
			local := b.Start.In(london)
			if m := local.Hour()*60 + local.Minute(); m < 8*60 || m > 17*60+30 || local.Weekday() == time.Sunday {
				t.Fatalf("appointment %s starts %s local", ev.AppointmentID, local)
			}
			if _, ok := truthOf[fmt.Sprint(ev.AppointmentID, "/", ev.Version)]; !ok {
				t.Fatalf("no truth for %s v%d", ev.AppointmentID, ev.Version)
			}
			s.version, s.start = ev.Version, b.Start
		} else if ev.Booking != nil {
			t.Fatalf("%s event carries booking facts", ev.Type)
		}
	}
	if bookings != len(truth) {
		t.Fatalf("%d bookings but %d truth records", bookings, len(truth))
	}
	for id, s := range appts {
		if !s.terminal {
			t.Fatalf("appointment %s never ended", id)
		}
	}
}

func TestNHSNumbers(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"9434765919", true}, // the NHS Digital documentation example
		{"9434765918", false},
		{"943476591", false},
		{"94347659190", false},
		{"94347a5919", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := validNHSNumber(tt.in); got != tt.want {
			t.Errorf("validNHSNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	g, err := New(Config{Seed: 9, Patients: 20000}, testPseudonymiser(t))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range g.patients {
		if !validNHSNumber(p.nhs) || p.nhs[:3] != "999" {
			t.Fatalf("patient %d: %q is not a valid 999-range NHS number", p.idx, p.nhs)
		}
		if seen[p.nhs] {
			t.Fatalf("NHS number %s used twice", p.nhs)
		}
		seen[p.nhs] = true
	}
}

// outcomeRow is one appointment that reached an outcome, with the facts the calibration
// tests bucket by, recomputed from the events themselves.
type outcomeRow struct {
	dna        bool
	p          float64
	lead       float64 // days, final version
	priorDNA   int     // known when the final version was booked
	firstVisit bool
	ageBand    string
	specialty  string
}

func outcomes(t *testing.T, evs []events.Appointment, truth []Truth) []outcomeRow {
	t.Helper()
	p := map[string]float64{}
	for _, tr := range truth {
		p[fmt.Sprint(tr.AppointmentID, "/", tr.Version)] = tr.PDNA
	}
	priorDNA := map[string]int{} // patient -> DNAs so far
	final := map[string]outcomeRow{}
	var rows []outcomeRow
	for _, ev := range evs {
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			b := ev.Booking
			final[ev.AppointmentID] = outcomeRow{
				p:          p[fmt.Sprint(ev.AppointmentID, "/", ev.Version)],
				lead:       b.Start.Sub(b.BookedAt).Hours() / 24,
				priorDNA:   priorDNA[ev.Patient],
				firstVisit: b.FirstVisit,
				ageBand:    b.AgeBand,
				specialty:  b.Specialty,
			}
		case events.Attended, events.DidNotAttend:
			r := final[ev.AppointmentID]
			r.dna = ev.Type == events.DidNotAttend
			if r.dna {
				priorDNA[ev.Patient]++
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func dnaRate(rows []outcomeRow, keep func(outcomeRow) bool) (rate float64, n int) {
	d := 0
	for _, r := range rows {
		if keep(r) {
			n++
			if r.dna {
				d++
			}
		}
	}
	return float64(d) / float64(n), n
}

func TestGroundTruthCalibration(t *testing.T) {
	if testing.Short() {
		t.Skip("big run")
	}
	evs, truth := generate(t, Config{Seed: 11, Patients: 30000, Days: 365})
	rows := outcomes(t, evs, truth)
	rate, n := dnaRate(rows, func(outcomeRow) bool { return true })
	meanP := 0.0
	for _, r := range rows {
		meanP += r.p
	}
	meanP /= float64(n)
	t.Logf("%d events, %d outcomes: DNA rate %.4f, mean true p %.4f, Bayes AUC %.3f", len(evs), n, rate, meanP, auc(rows))
	if rate < 0.065 || rate > 0.085 {
		t.Errorf("DNA rate %.4f outside 6.5%%..8.5%%", rate)
	}
	// The standard error of the rate is about 0.1% here; a larger gap means the truth
	// records are not the probabilities the outcomes were drawn from.
	if math.Abs(meanP-rate) > 0.004 {
		t.Errorf("mean true p %.4f far from the realised DNA rate %.4f", meanP, rate)
	}

	increasing := []struct {
		name    string
		buckets []func(outcomeRow) bool
	}{
		{"lead time 0-7, 7-28, 28-90, 90+ days", []func(outcomeRow) bool{
			func(r outcomeRow) bool { return r.lead < 7 },
			func(r outcomeRow) bool { return r.lead >= 7 && r.lead < 28 },
			func(r outcomeRow) bool { return r.lead >= 28 && r.lead < 90 },
			func(r outcomeRow) bool { return r.lead >= 90 },
		}},
		{"prior DNAs 0, 1, 2+", []func(outcomeRow) bool{
			func(r outcomeRow) bool { return r.priorDNA == 0 },
			func(r outcomeRow) bool { return r.priorDNA == 1 },
			func(r outcomeRow) bool { return r.priorDNA >= 2 },
		}},
		{"age 65-74, 45-54, 18-24", []func(outcomeRow) bool{
			func(r outcomeRow) bool { return r.ageBand == "65-74" },
			func(r outcomeRow) bool { return r.ageBand == "45-54" },
			func(r outcomeRow) bool { return r.ageBand == "18-24" },
		}},
		{"clinical oncology, all, adult mental illness", []func(outcomeRow) bool{
			func(r outcomeRow) bool { return r.specialty == "800" },
			func(r outcomeRow) bool { return true },
			func(r outcomeRow) bool { return r.specialty == "710" },
		}},
	}
	for _, tt := range increasing {
		t.Run(tt.name, func(t *testing.T) {
			prev := -1.0
			for i, keep := range tt.buckets {
				r, n := dnaRate(rows, keep)
				t.Logf("bucket %d: DNA rate %.4f over %d", i, r, n)
				if n < 200 {
					t.Fatalf("bucket %d has only %d outcomes", i, n)
				}
				if r <= prev {
					t.Errorf("bucket %d: DNA rate %.4f not above the previous bucket's %.4f", i, r, prev)
				}
				prev = r
			}
		})
	}
	newRate, _ := dnaRate(rows, func(r outcomeRow) bool { return r.firstVisit })
	fuRate, _ := dnaRate(rows, func(r outcomeRow) bool { return !r.firstVisit })
	t.Logf("DNA rate: new %.4f, follow-up %.4f", newRate, fuRate)
}

func TestBookingMix(t *testing.T) {
	evs, _ := generate(t, Config{Seed: 5, Patients: 10000})
	var booked, first, sms, optOut, noDep, resched, pc, hc, sat int
	for _, ev := range evs {
		switch ev.Type {
		case events.Booked:
			booked++
			b := ev.Booking
			if b.FirstVisit {
				first++
			}
			if b.Contact.SMS {
				sms++
			}
			if b.Contact.OptOut {
				optOut++
			}
			if b.Deprivation == nil {
				noDep++
			}
			if b.Start.In(london).Weekday() == time.Saturday {
				sat++
			}
		case events.Rescheduled:
			if ev.Version == 2 {
				resched++
			}
		case events.Cancelled:
			if ev.CancelledBy == events.ByPatient {
				pc++
			} else {
				hc++
			}
		}
	}
	tests := []struct {
		name     string
		count    int
		lo, high float64
	}{
		{"first visits", first, 0.27, 0.33},
		{"SMS contact", sms, 0.81, 0.89},
		{"reminder opt-out", optOut, 0.015, 0.045},
		{"deprivation unknown", noDep, 0.03, 0.07},
		{"rescheduled at least once", resched, 0.065, 0.095},
		{"cancelled by patient", pc, 0.04, 0.06},
		{"cancelled by hospital", hc, 0.03, 0.05},
		{"Saturday clinics", sat, 0, 0.02},
	}
	for _, tt := range tests {
		if f := float64(tt.count) / float64(booked); f < tt.lo || f > tt.high {
			t.Errorf("%s: %.4f of %d bookings, want %.3f..%.3f", tt.name, f, booked, tt.lo, tt.high)
		}
	}
}

// auc is the probability that a random DNA has a higher true p than a random attendance:
// the best AUC any model of the booking-time facts can reach on this data.
func auc(rows []outcomeRow) float64 {
	s := slices.Clone(rows)
	slices.SortFunc(s, func(a, b outcomeRow) int { return cmp.Compare(a.p, b.p) })
	var pos, neg, rankSum float64
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].p == s[i].p {
			j++
		}
		mid := float64(i+j+1) / 2 // average 1-based rank of the tie group
		for k := i; k < j; k++ {
			if s[k].dna {
				pos++
				rankSum += mid
			} else {
				neg++
			}
		}
		i = j
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// BenchmarkGenerate measures generating 1,000,000 events (a year of 100,000 patients).
func BenchmarkGenerate(b *testing.B) {
	ps := testPseudonymiser(b)
	for b.Loop() {
		g, err := New(Config{Seed: 1, Patients: 100_000, Days: 365}, ps)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for range g.All() {
			if n++; n == 1_000_000 {
				break
			}
		}
		if n < 1_000_000 {
			b.Fatalf("only %d events", n)
		}
	}
}

func TestTruthFileRoundTrip(t *testing.T) {
	_, truth := generate(t, Config{Seed: 3, Patients: 100, Days: 30})
	var buf strings.Builder
	tw := NewTruthWriter(&buf)
	for _, tr := range truth {
		tw.Write(tr)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "appointment_id,booking_version,p_dna\n") {
		t.Fatalf("truth file starts %q", buf.String()[:40])
	}
	got, err := ReadTruth(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, truth) {
		t.Fatal("truth changed in a round trip through the file")
	}
	for _, bad := range []string{"", "a,b,c\n", "appointment_id,booking_version,p_dna\nx,1,1.5\n", "appointment_id,booking_version,p_dna\nx,one,0.5\n"} {
		if _, err := ReadTruth(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadTruth(%q) succeeded", bad)
		}
	}
}

// TestDNASinceBooking: with Config.DNASinceBooking, an appointment whose patient missed
// another appointment after it was booked (and before it started) ends in a DNA more often
// than its booking-time truth says, by about the documented odds ratio; without one, as its
// truth says. Off, the stream is the default one.
func TestDNASinceBooking(t *testing.T) {
	cfg := Config{Seed: 13, Patients: 20000, Days: 365}
	evs, truth := generate(t, cfg)
	cfg.DNASinceBooking = true
	evsR, truthR := generate(t, cfg)
	if len(evs) == len(evsR) && digest(t, evs, truth) == digest(t, evsR, truthR) {
		t.Fatal("DNASinceBooking changed nothing")
	}
	// Per outcome: the booking-time truth of the final version, and whether the patient had a
	// DNA recorded between that version's booking and the start.
	p := map[[2]any]float64{}
	for _, tr := range truthR {
		p[[2]any{tr.AppointmentID, tr.Version}] = tr.PDNA
	}
	type appt struct {
		booked time.Time
		start  time.Time
	}
	final := map[string]appt{}
	dnas := map[string][]time.Time{}
	var sum [2]struct{ n, dna, p float64 }
	for _, ev := range evsR {
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			final[ev.AppointmentID] = appt{ev.EventTime, ev.Booking.Start}
		case events.Attended, events.DidNotAttend:
			a := final[ev.AppointmentID]
			since := 0
			for _, d := range dnas[ev.Patient] {
				if d.After(a.booked) && d.Before(a.start) {
					since = 1
				}
			}
			s := &sum[since]
			s.n++
			s.p += p[[2]any{ev.AppointmentID, ev.Version}]
			if ev.Type == events.DidNotAttend {
				s.dna++
				dnas[ev.Patient] = append(dnas[ev.Patient], ev.EventTime)
			}
		}
	}
	none, some := sum[0], sum[1]
	t.Logf("no DNA since booking: %.0f outcomes, DNA rate %.4f, mean truth %.4f; some: %.0f, %.4f, %.4f",
		none.n, none.dna/none.n, none.p/none.n, some.n, some.dna/some.n, some.p/some.n)
	if math.Abs(none.dna/none.n-none.p/none.n) > 0.005 {
		t.Errorf("without a DNA since booking the DNA rate %.4f is not the truth's %.4f", none.dna/none.n, none.p/none.n)
	}
	if some.n < 1000 || some.dna/some.n < 2.2*some.p/some.n {
		t.Errorf("with a DNA since booking (%.0f outcomes) the DNA rate %.4f is not well above the truth's %.4f", some.n, some.dna/some.n, some.p/some.n)
	}
}
