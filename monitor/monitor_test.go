package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
)

// newTestStore is a Store on the real Redis under a prefix of the test's own.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("dnamontest:%s:%d:", t.Name(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return NewStore(rdb, prefix)
}

func pseudonym(i int) string {
	s := sha256.Sum256([]byte(fmt.Sprint("patient", i)))
	return hex.EncodeToString(s[:])
}

func riskMsg(topic, patient, appt string, version int, p float64, band, model string, start time.Time, reason string, f map[string]float64) kafka.Message {
	r := events.Risk{Schema: events.RiskSchema, AppointmentID: appt, Version: version, Patient: patient,
		SourceEventID: appt + "-v" + fmt.Sprint(version), AppointmentStart: start, Probability: p, Band: band,
		ModelID: model, ScoredAt: start.Add(-72 * time.Hour), Reason: reason, Features: f}
	if reason != "" {
		r.ScoredAsOf = start.Add(-24 * time.Hour)
	}
	b, _ := json.Marshal(r)
	return kafka.Message{Topic: topic, Key: []byte(patient), Value: b}
}

func outcomeMsg(patient, appt string, version int, dna bool, at time.Time) kafka.Message {
	typ := events.Attended
	if dna {
		typ = events.DidNotAttend
	}
	a := events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprintf("%s-o%d", appt, version), Type: typ,
		EventTime: at, AppointmentID: appt, Version: version, Patient: patient}
	b, err := json.Marshal(a)
	if err != nil {
		panic(err)
	}
	return kafka.Message{Topic: "appointments", Key: []byte(patient), Value: b}
}

func TestJoinIsIdempotentInEitherOrder(t *testing.T) {
	testJoin(t, newTestStore(t))
}

// The same on a Redis Cluster: appointment hashes and day hashes live in different slots.
func TestJoinOnRedisCluster(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("dnamontest:cluster:%d:", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		_ = rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
			return nil
		})
	})
	testJoin(t, NewStore(rdb, prefix))
}

func testJoin(t *testing.T, st *Store) {
	ctx := context.Background()
	key := []byte("0123456789abcdef-holdout")
	m, err := New(Config{Store: st, Model: "champ", Features: []string{"age_band", "specialty", "lead_time_days"},
		Holdout: &policy.Holdout{Share: 0.2, Key: key}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	f := map[string]float64{"age_band": 2, "specialty": 110, "lead_time_days": 30}
	p1, p2 := pseudonym(1), pseudonym(2)
	batch := []kafka.Message{
		// Appointment A: score at booking, a re-score (served), then the DNA.
		riskMsg("risk", p1, "A", 1, 0.10, "medium", "champ", start, "", f),
		riskMsg("risk.shadow", p1, "A", 1, 0.20, "high", "chall", start, "", nil),
		riskMsg("risk", p1, "A", 1, 0.40, "very_high", "champ", start, events.RescoreHistoryChanged, f),
		outcomeMsg(p1, "A", 1, true, start),
		// Appointment B: the outcome is read before its score (another topic, another pace).
		outcomeMsg(p2, "B", 1, false, start.Add(time.Hour)),
		{Topic: "appointments", Key: []byte(p2), Value: []byte(`{"not":"an event"}`)},
	}
	for round := range 3 { // the first delivery, then two redeliveries after "crashes"
		if err := m.Process(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			if err := m.Process(ctx, []kafka.Message{riskMsg("risk", p2, "B", 1, 0.05, "low", "champ", start.Add(time.Hour), "", f)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := m.Stats.Refused.Load(); got != 3 {
		t.Fatalf("refused %d, want the one malformed event in each of 3 deliveries", got)
	}
	var joined []Joined
	if err := st.load(ctx, "outcomes", start, start, func(_, _ string, v []byte) error {
		var j Joined
		if err := decode(v, &j); err != nil {
			return err
		}
		joined = append(joined, j)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(joined) != 2 {
		t.Fatalf("%d joined records after redeliveries, want 2: %+v", len(joined), joined)
	}
	for _, j := range joined {
		switch {
		case j.DNA:
			if j.P != 0.40 || j.Band != "very_high" || j.PBooking == nil || *j.PBooking != 0.10 ||
				j.Challenger == nil || *j.Challenger != 0.20 || j.ChallengerModel != "chall" || j.Groups != [3]string{"25-34", "unknown", "110"} {
				t.Errorf("A joined as %+v", j)
			}
			if j.Arm == nil || *j.Arm != policy.Arm(key, "A") {
				t.Errorf("A's arm %v, want policy.Arm", j.Arm)
			}
		default:
			if j.P != 0.05 || j.Challenger != nil {
				t.Errorf("B joined as %+v", j)
			}
		}
	}

	// A reschedule to another day moves both of B's records; an older version's late score
	// does not overwrite the newer.
	later := start.AddDate(0, 0, 3)
	if err := m.Process(ctx, []kafka.Message{
		riskMsg("risk", p2, "B", 2, 0.07, "low", "champ", later, "", f),
		riskMsg("risk", p2, "B", 1, 0.90, "very_high", "champ", start, "", f),
	}); err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, kind := range []string{"scored", "outcomes"} {
		if err := st.load(ctx, kind, start, later, func(day, _ string, v []byte) error {
			n[kind+" "+day]++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{"scored 2025-03-10": 1, "outcomes 2025-03-10": 1, "scored 2025-03-13": 1, "outcomes 2025-03-13": 1}
	if fmt.Sprint(n) != fmt.Sprint(want) {
		t.Fatalf("records by day %v, want %v", n, want)
	}
}

func TestReportOnStore(t *testing.T) {
	ctx := context.Background()
	st := newTestStore(t)
	m, err := New(Config{Store: st, Model: "champ", Features: []string{"lead_time_days"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)
	var batch []kafka.Message
	// 400 appointments over 40 days; the riskier half miss more often.
	for i := range 400 {
		p, band := 0.05, "low"
		if i%2 == 1 {
			p, band = 0.30, "high"
		}
		at := start.AddDate(0, 0, i/10)
		pt := pseudonym(i)
		appt := fmt.Sprint("R", i)
		batch = append(batch, riskMsg("risk", pt, appt, 1, p, band, "champ", at, "", map[string]float64{"lead_time_days": float64(i % 50)}),
			outcomeMsg(pt, appt, 1, (i%2 == 1 && i%7 < 2) || i%40 == 0, at))
	}
	if err := m.Process(ctx, batch); err != nil {
		t.Fatal(err)
	}
	ref := &scoring.Reference{ModelID: "champ", Score: scoring.Bins{Edges: []float64{0.1}, Shares: []float64{0.5, 0.5}},
		Features: []scoring.FeatureReference{{Name: "lead_time_days", Type: scoring.Numeric, Edges: []float64{24.5}, Shares: []float64{0.5, 0.5}}}}
	rr := &Reporter{Store: st, Card: Card{ModelID: "champ", AUC: 0.7}, Reference: ref}
	rep, err := rr.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.LatestDay != "2025-07-11" || len(rep.Windows) != 3 {
		t.Fatalf("latest day %q, %d windows", rep.LatestDay, len(rep.Windows))
	}
	w90 := rep.Windows[2]
	if w90.Outcomes != 400 || w90.Scored != 400 || w90.AUC == nil || w90.OE == nil {
		t.Fatalf("90-day window %+v", w90)
	}
	w7 := rep.Windows[0]
	if w7.Outcomes != 70 || w7.From != "2025-07-05" {
		t.Fatalf("7-day window has %d outcomes from %s, want 70 from 2025-07-05", w7.Outcomes, w7.From)
	}
	if w90.PSIScore == nil || *w90.PSIScore > 1e-9 || len(w90.Features) != 1 || *w90.Features[0].PSI > 1e-9 {
		t.Fatalf("drift against a matching reference: %+v %+v", w90.PSIScore, w90.Features)
	}
	// O/E: DNAs observed against 200×0.05 + 200×0.30 = 70 expected.
	want := 0
	for i := range 400 {
		if (i%2 == 1 && i%7 < 2) || i%40 == 0 {
			want++
		}
	}
	if w90.DNAs != want || w90.OE.Expected < 69.99 || w90.OE.Expected > 70.01 {
		t.Fatalf("DNAs %d (want %d), expected %v (want 70)", w90.DNAs, want, w90.OE.Expected)
	}
}
