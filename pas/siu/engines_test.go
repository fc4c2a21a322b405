package siu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// engineMessages reads testdata/engines/*.hl7 in name order, exactly as the engines wrote them.
func engineMessages(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("testdata/engines/*.hl7")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no engine messages: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// Messages in the style of Rhapsody, InterSystems and Mirth (CR and LF endings, a custom field
// separator, Z-segments, repeated PID-3, enhanced-mode headers, a reschedule with no PID-13 or
// AIL) through the handler and a real gateway: each accepted, and the appointment's facts
// merged across them.
func TestEngineStyleMessages(t *testing.T) {
	out, store := &captured{}, &contactLog{}
	g := pas.NewGateway(&pas.MemoryTracker{}, out, nil)
	g.SetContacts(store)
	mp, err := pas.LoadMapping("../../cmd/pasgateway/mapping.example.json")
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Mapper: mapper(t, Config{Mapping: mp}), Gateway: g}
	msgs := engineMessages(t)
	names := make([]string, 0, len(msgs))
	for n := range msgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		replies := h.Message(context.Background(), msgs[n])
		if len(replies) != 1 {
			t.Fatalf("%s: %d replies", n, len(replies))
		}
		code, _, text, _ := ackOf(t, replies[0])
		if code != hl7.AA && code != hl7.CA {
			t.Fatalf("%s: %s %q", n, code, text)
		}
	}
	var got []string
	for _, ev := range out.evs {
		got = append(got, fmt.Sprintf("%s:%s:v%d", ev.AppointmentID, ev.Type, ev.Version))
	}
	if strings.Join(got, " ") != "RXX01:ENG100:booked:v1 RXX01:ENG100:rescheduled:v2 RXX01:ENG100:rescheduled:v3 RXX01:ENG100:cancelled:v3 RXX01:ENG200:did_not_attend:v1" {
		t.Fatalf("events %v", got)
	}
	s13, s14 := out.evs[1].Booking, out.evs[2].Booking
	if s13.Clinic != "ORTHO1" || !s13.Contact.SMS || s13.Specialty != "110" || !s13.FirstVisit || s13.AgeBand != "35-44" {
		t.Fatalf("the S13 without PID-13/AIL lost held facts: %+v", s13)
	}
	if s14.Clinic != "ORTHO3" || !s14.Start.Equal(s13.Start) || !s14.Contact.SMS {
		t.Fatalf("the Mirth S14: %+v", s14)
	}
	ps := mapper(t, Config{}).cfg.Pseudonymiser
	if c := store.saved[ps.Pseudonym("9434765919")]; c.Mobile.Reveal() != "07700900123" || c.OptOut {
		t.Fatalf("contact store: %q %v", c.Mobile.Reveal(), c.OptOut)
	}
	// The mapping file: the NTE "Patient requested cancellation" is the patient's, and ZPI-3
	// carries the interpreter_needed extra (N → 0), kept through the updates.
	if by := out.evs[3].CancelledBy; by != events.ByPatient {
		t.Fatalf("S15 with the reason only in NTE: cancelled by %s", by)
	}
	for i, b := range []*events.Booking{out.evs[0].Booking, s13, s14} {
		if v, ok := b.Extra["interpreter_needed"]; !ok || v != 0 {
			t.Fatalf("event %d: extras %v", i, b.Extra)
		}
	}
}

// The mapping file's local specialty codes, cancellation codes and extras; without it the
// same messages fall back to the built-in rules.
func TestMapWithMappingFile(t *testing.T) {
	mp, err := pas.LoadMapping("../../cmd/pasgateway/mapping.example.json")
	if err != nil {
		t.Fatal(err)
	}
	local := strings.NewReplacer("110^Trauma \\T\\ Orthopaedics^NHSTFC", "ORTHO^Orthopaedics^L", "|||||||110\n", "\n",
		"AIP|1|A|", "ZAP|1|x|x|12.5\nAIP|1|A|").Replace(s12v251)
	cancel := strings.Replace(s15, "2^Cancelled by patient^NHSDD_ATTENDED", "PT^^LOCAL", 1)
	for _, c := range []struct {
		mapping   *pas.Mapping
		specialty string
		distance  float64
		by        events.CancelledBy
	}{
		{mp, "110", 12.5, events.ByPatient},
		{nil, "unknown", 0, events.ByPatient}, // PT is one of the built-in patient codes too
	} {
		m := mapper(t, Config{Mapping: c.mapping})
		ch, _, err := mapMsg(t, m, local)
		if err != nil {
			t.Fatal(err)
		}
		b := bookingOf(t, ch)
		if b.Specialty != c.specialty || b.Extra["travel_distance_km"] != c.distance {
			t.Errorf("mapping %v: specialty %s extras %v", c.mapping != nil, b.Specialty, b.Extra)
		}
		ch, _, _ = mapMsg(t, m, cancel)
		if ch.CancelledBy != c.by {
			t.Errorf("mapping %v: cancelled by %s", c.mapping != nil, ch.CancelledBy)
		}
	}
	ch, _, _ := mapMsg(t, mapper(t, Config{Mapping: mp}), strings.Replace(s15, "2^Cancelled by patient^NHSDD_ATTENDED", "CLINX", 1))
	if ch.CancelledBy != events.ByHospital {
		t.Errorf("CLINX: %s", ch.CancelledBy)
	}
}

// TestAcksParseInHL7apy: every acknowledgement the handler writes (accepted, ignored, refused,
// in original and enhanced mode, v2.3 to v2.5.1, custom separators) parses and validates in
// PyPI's hl7apy, with the MSA-1 and MSA-2 we meant.
func TestAcksParseInHL7apy(t *testing.T) {
	py := testenv.OraclePython(t)
	type ack struct {
		name string
		b    []byte
	}
	var acks []ack
	add := func(name string, replies [][]byte) {
		for i, r := range replies {
			acks = append(acks, ack{fmt.Sprintf("%s-%d", name, i), r})
		}
	}
	g := pas.NewGateway(&pas.MemoryTracker{}, &captured{}, nil)
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: g}
	msgs := engineMessages(t)
	for n, m := range msgs {
		add(n, h.Message(context.Background(), m))
	}
	enhanced := strings.Replace(s12v251, "|||AL|NE||", "|||AL|AL||", 1)
	for i, m := range []string{s12v251, s12v23, s13, s15, s17, s26, enhanced,
		strings.Replace(enhanced, "MSG00001", "MSG00099", 1),
		strings.Replace(s17, "SIU^S17", "SIU^S20", 1),
		strings.Replace(s12v251, "SIU^S12^SIU_S12", "ADT^A04^ADT_A01", 1),
		strings.Replace(s12v23, "|P|2.3", "|T|2.3", 1),
		strings.Replace(s12v251, "19800615", "19801315", 1),
		strings.Replace(s12v23, "20070101", "20070231", 1),
		strings.Replace(strings.Replace(s12v251, "|||AL|NE||", "|||||", 1), "9434765919", "9434765918", 1),
		strings.Replace(s12v251, "PID|", "ZPI|", 1),
		"MSH|^~\\&|PAS|RXX01|DNARISK|RXX01|20250310091500||SIU^S12|X1|P|2.5.1\nPID|1\n",
	} {
		add(fmt.Sprintf("msg%02d", i), h.Message(context.Background(), wire(m)))
	}
	acks = append(acks, ack{"too-large", h.TooLarge(context.Background(), wire(s12v251)[:300])})
	unavailable := &Handler{Mapper: mapper(t, Config{}), Gateway: &recorder{err: wrapUnavailable()}}
	add("unavailable", unavailable.Message(context.Background(), wire(s12v23)))
	add("unavailable-enhanced", unavailable.Message(context.Background(), wire(enhanced)))

	dir := t.TempDir()
	var files []string
	codes := map[string]int{}
	for _, a := range acks {
		code, ctrl, _, _ := ackOf(t, a.b)
		codes[code]++
		p := filepath.Join(dir, a.name+".hl7")
		if err := os.WriteFile(p, append([]byte("# "+code+" "+ctrl+"\n"), a.b...), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	for _, c := range []string{"AA", "AE", "AR", "CA", "CE", "CR"} {
		if codes[c] == 0 {
			t.Fatalf("no %s acknowledgement among the %d checked (%v): the oracle would not see one", c, len(acks), codes)
		}
	}
	res, err := exec.Command(py, append([]string{"../testdata/oracles/hl7_acks.py"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("hl7apy refused acknowledgements: %v\n%s", err, res)
	}
	if want := fmt.Sprintf("%d passed, 0 failed", len(files)); !strings.Contains(string(res), want) {
		t.Fatalf("hl7apy: want %q:\n%s", want, res)
	}
	t.Logf("hl7apy: %d acknowledgements (%v) parsed and validated", len(files), codes)
}
