package featurestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func sampleFacts(n int) []Fact {
	facts := make([]Fact, n)
	kinds := []Kind{KindBooked, KindRescheduled, KindAttended, KindDidNotAttend, KindPatientCancel, KindHospitalCancel}
	for i := range facts {
		facts[i] = Fact{Appointment: fmt.Sprintf("RX1-OP-%08d", i), Kind: kinds[i%len(kinds)], Version: int32(1 + i%3),
			At: 1_760_000_000 + int64(i)*86_400*7}
		if facts[i].Kind == KindBooked {
			facts[i].Start = facts[i].At + 86_400*30
		}
	}
	return facts
}

func TestCodecRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 12, 1000} {
		facts := sampleFacts(n)
		got, err := decodeFacts(string(appendFacts(nil, facts)))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, facts) {
			t.Fatalf("%d facts: round trip changed them", n)
		}
	}
}

func TestCodecRefusesCorruptInput(t *testing.T) {
	good := appendFacts(nil, sampleFacts(3))
	for i := 1; i < len(good); i++ {
		if _, err := decodeFacts(string(good[:i])); err == nil {
			t.Fatalf("truncated to %d of %d bytes accepted", i, len(good))
		}
	}
	if _, err := decodeFacts(string(append([]byte{9}, good[1:]...))); err == nil {
		t.Fatal("unknown format version accepted")
	}
	if _, err := decodeFacts(string(append(good, 0))); err == nil {
		t.Fatal("trailing bytes accepted")
	}
}

func FuzzDecodeFacts(f *testing.F) {
	f.Add(appendFacts(nil, sampleFacts(3)))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		facts, err := decodeFacts(string(b))
		if err != nil {
			return
		}
		again, err := decodeFacts(string(appendFacts(nil, facts)))
		if err != nil || len(again) != len(facts) {
			t.Fatalf("accepted history does not round-trip: %v", err)
		}
	})
}

func BenchmarkCodec(b *testing.B) {
	facts := sampleFacts(12)
	bin := appendFacts(nil, facts)
	stored := string(bin)
	js, _ := json.Marshal(facts)
	b.Run("binary-decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := decodeFacts(stored); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json-decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var out []Fact
			if err := json.Unmarshal(js, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What a save costs after a batch added one fact to a history of 12 read from Redis.
	grown := append(slices.Clone(facts), Fact{Appointment: "RX1-OP-99999999", Kind: KindBooked, Version: 1, At: facts[11].At + 60})
	b.Run("binary-encode-whole", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = appendFacts(nil, grown)
		}
	})
	b.Run("binary-encode-appended", func(b *testing.B) {
		b.ReportAllocs()
		h := &History{Facts: grown, enc: stored, encN: len(facts)}
		for i := 0; i < b.N; i++ {
			_ = h.appendEncoding(nil)
		}
	})
	b.Logf("12 facts: binary %d bytes, JSON %d bytes", len(bin), len(js))
}

// A history read from the store and then grown is saved as exactly the bytes a whole
// encoding writes, whatever the facts (times going backwards too), and a prune, which drops
// facts from the front, falls back to the whole encoding.
func TestEncodeAppendsToTheStoredEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []Kind{KindBooked, KindRescheduled, KindAttended, KindDidNotAttend, KindPatientCancel, KindHospitalCancel}
	randomFacts := func(n int) []Fact {
		fs := make([]Fact, n)
		for i := range fs {
			fs[i] = Fact{Appointment: fmt.Sprintf("A%d", rng.IntN(1<<20)), Kind: kinds[rng.IntN(len(kinds))],
				Version: int32(rng.IntN(300)), At: 1_700_000_000 + rng.Int64N(1<<27) - 1<<26, Start: rng.Int64N(1 << 31)}
		}
		return fs
	}
	for trial := 0; trial < 500; trial++ {
		stored, added := randomFacts(rng.IntN(40)), randomFacts(rng.IntN(5))
		enc := string(appendFacts(nil, stored))
		h, err := decodeHistory([]any{"7", enc, nil})
		if err != nil {
			t.Fatal(err)
		}
		h.Facts = append(h.Facts, added...)
		if got, want := h.appendEncoding(nil), appendFacts(nil, h.Facts); !bytes.Equal(got, want) {
			t.Fatalf("trial %d: %d stored + %d added facts encode differently from a whole encoding", trial, len(stored), len(added))
		}
	}

	var stored History
	for i := range 5 {
		stored.Apply(ptr(booking(fmt.Sprintf("A%d", i), 1, t0.Add(days(i)), t0.Add(days(i+30)))), Policy{})
	}
	h, err := decodeHistory([]any{"1", string(appendFacts(nil, stored.Facts)), nil})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Apply(ptr(booking("B", 1, t0.Add(days(3*365+2)), t0.Add(days(3*365+30)))), Policy{}) {
		t.Fatal("booking not applied")
	}
	if len(h.Facts) != 4 || h.encN != 0 {
		t.Fatalf("after a prune: %d facts, %d still taken as stored; want 4 and 0", len(h.Facts), h.encN)
	}
	if got, want := h.appendEncoding(nil), appendFacts(nil, h.Facts); !bytes.Equal(got, want) {
		t.Fatal("a pruned history encodes differently from a whole encoding")
	}
}

func ptr[T any](v T) *T { return &v }

// The codec field tells a newer format from corrupt bytes: absent is version 1, above
// codecVersion is newer (never touched), anything that is not a version is corrupt.
func TestFormatVersion(t *testing.T) {
	for _, c := range []struct {
		field any
		want  int
		err   error
	}{
		{nil, 1, nil},
		{"1", 1, nil},
		{"2", 2, ErrNewerFormat},
		{"250", 250, ErrNewerFormat},
		{"0", 0, errCorrupt},
		{"-1", 0, errCorrupt},
		{"x", 0, errCorrupt},
		{"", 0, errCorrupt},
	} {
		v, err := formatVersion(c.field)
		if v != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("formatVersion(%v) = %d, %v; want %d, %v", c.field, v, err, c.want, c.err)
		}
		if errors.Is(err, ErrNewerFormat) && errors.Is(err, errCorrupt) {
			t.Errorf("formatVersion(%v): both newer and corrupt", c.field)
		}
	}
}
