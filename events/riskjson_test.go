package events

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestRiskAppendJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "RX1-OP-1", `quo"te\back`, "<&>", "tab\tnew\nline\r", "\x01\x1f", "é ünï", "\u2028\u2029", "bad\xffutf8", "a very long appointment id 0123456789"}
	floats := []float64{0, 1, -1, 0.5, 1e-7, 1.2345e-9, 3e21, 123456789012, 0.1 + 0.2, math.SmallestNonzeroFloat64, math.MaxFloat64, 1e20, 999999.999999,
		math.Copysign(0, -1), 2, 42, -7, 1e15 - 1, 1e15, 1 << 53, -(1 << 53), 1e21}
	for i := 0; i < 2000; i++ {
		r := Risk{
			Schema: RiskSchema, AppointmentID: strs[rng.IntN(len(strs))], Version: rng.IntN(5) + 1,
			Patient: strs[rng.IntN(len(strs))], SourceEventID: strs[rng.IntN(len(strs))],
			AppointmentStart: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("X", 3600*rng.IntN(3))),
			Probability:      rng.Float64(), Band: strs[rng.IntN(len(strs))], ModelID: "m",
			ScoredAt: time.Now(),
		}
		if i%2 == 0 {
			r.Probability = floats[rng.IntN(len(floats))]
		}
		if i%3 == 0 { // a re-score
			r.ScoredAsOf, r.Reason = time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC(), RescoreHistoryChanged
		}
		if i%7 != 0 {
			r.Features = map[string]float64{}
			for j := 0; j < rng.IntN(20); j++ {
				v := floats[rng.IntN(len(floats))]
				if j%2 == 0 { // a fraction; odd features keep floats' whole numbers, as counts are
					v *= rng.Float64()
				}
				r.Features[strs[rng.IntN(len(strs))]+string(rune('a'+j))] = v
			}
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON differs from json.Marshal:\n got %s\nwant %s", got, want)
		}
		// The same features as sorted slices, without the map, encode the same.
		if r.Features != nil {
			s := r
			s.Features, s.FeatureNames = nil, slices.Sorted(maps.Keys(r.Features))
			for _, k := range s.FeatureNames {
				s.FeatureValues = append(s.FeatureValues, r.Features[k])
			}
			if s.FeatureNames == nil {
				s.FeatureNames = []string{}
			}
			if got := s.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON from FeatureNames differs from json.Marshal of the map:\n got %s\nwant %s", got, want)
			}
		}
	}
}

func BenchmarkRiskEncode(b *testing.B) {
	r := Risk{Schema: RiskSchema, AppointmentID: "RX1-OP-20261124-000481", Version: 1,
		Patient: "f23090a36451bfa74057a971b116cdad5a9d5c7377e58349eaf336b19a372a5d", SourceEventID: "0b7c2f4e-5d1a-4c1e-9a53-6f0d2b8e9c11",
		AppointmentStart: time.Now(), Probability: 0.1342, Band: "high", ModelID: "dna-gbm-x", ScoredAt: time.Now(),
		Features: map[string]float64{"lead_time_days": 21.98, "first_visit": 1, "specialty": 130, "age_band": 2, "deprivation_decile": 3,
			"weekday": 2, "hour": 9, "booking_version": 1, "prior_appointments": 4, "prior_dna": 1, "prior_attended": 3,
			"prior_dna_rate": 0.25, "dna_last_365d": 1, "days_since_last_dna": 120.5, "days_since_last_attended": 30.25,
			"prior_patient_cancellations": 0, "prior_hospital_cancellations": 1, "prior_reschedules": 0, "open_bookings": 1}}
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = json.Marshal(r)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = r.AppendJSON(buf[:0])
		}
	})
	s := r
	s.Features, s.FeatureNames = nil, slices.Sorted(maps.Keys(r.Features))
	for _, k := range s.FeatureNames {
		s.FeatureValues = append(s.FeatureValues, r.Features[k])
	}
	b.Run("AppendJSON-slices", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = s.AppendJSON(buf[:0])
		}
	})
}
