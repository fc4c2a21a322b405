package featurestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func sampleFacts(n int) []Fact {
	facts := make([]Fact, n)
	kinds := []Kind{KindBooked, KindRescheduled, KindAttended, KindDidNotAttend, KindPatientCancel, KindHospitalCancel}
	for i := range facts {
		facts[i] = Fact{Appointment: fmt.Sprintf("RX1-OP-%08d", i), Kind: kinds[i%len(kinds)], Version: 1 + i%3,
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
		got, err := decodeFacts(appendFacts(nil, facts))
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
		if _, err := decodeFacts(good[:i]); err == nil {
			t.Fatalf("truncated to %d of %d bytes accepted", i, len(good))
		}
	}
	if _, err := decodeFacts(append([]byte{9}, good[1:]...)); err == nil {
		t.Fatal("unknown format version accepted")
	}
	if _, err := decodeFacts(append(good, 0)); err == nil {
		t.Fatal("trailing bytes accepted")
	}
}

func FuzzDecodeFacts(f *testing.F) {
	f.Add(appendFacts(nil, sampleFacts(3)))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		facts, err := decodeFacts(b)
		if err != nil {
			return
		}
		again, err := decodeFacts(appendFacts(nil, facts))
		if err != nil || len(again) != len(facts) {
			t.Fatalf("accepted history does not round-trip: %v", err)
		}
	})
}

func BenchmarkCodec(b *testing.B) {
	facts := sampleFacts(12)
	bin := appendFacts(nil, facts)
	js, _ := json.Marshal(facts)
	b.Run("binary-decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := decodeFacts(bin); err != nil {
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
	b.Logf("12 facts: binary %d bytes, JSON %d bytes", len(bin), len(js))
}

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
