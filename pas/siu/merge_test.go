package siu

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// captured keeps what the gateway published.
type captured struct {
	mu  sync.Mutex
	evs []events.Appointment
}

func (c *captured) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		var ev events.Appointment
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			return err
		}
		c.evs = append(c.evs, ev)
	}
	return nil
}

func (c *captured) last() events.Appointment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evs[len(c.evs)-1]
}

// HL7 v2 update semantics: in an S13/S14 an empty field means no change and "" means delete.
// Each step goes through the handler and a real gateway, merging onto what the gateway holds.
func TestUpdatesMergeOntoWhatTheGatewayHolds(t *testing.T) {
	out := &captured{}
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: pas.NewGateway(&pas.MemoryTracker{}, out, nil)}
	send := func(msg string) (string, string) {
		t.Helper()
		code, _, text, _ := ackOf(t, only(t, h.Message(context.Background(), wire(msg))))
		return code, text
	}
	if code, text := send(strings.Replace(s12v251, "|||AL|NE||", "|||||", 1)); code != hl7.AA || text != "booked version 1 published" {
		t.Fatalf("S12: %s %q", code, text)
	}
	// A reschedule as engines send it: a new start in TQ1, no PID-13, no PD1, no PV1, no AIL,
	// no AIS.
	bare := `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250320110000||SIU^S13^SIU_S12|MSG00010|P|2.5.1
SCH|PLC123^CRS|APT100234^PAS
TQ1|1||||||20250409141500
PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F
RGS|1
`
	if code, text := send(bare); code != hl7.AA || text != "rescheduled version 2 published" {
		t.Fatalf("bare S13: %s %q", code, text)
	}
	b := out.last().Booking
	if !b.Start.Equal(time.Date(2025, 4, 9, 13, 15, 0, 0, time.UTC)) || b.Clinic != "ORTHO1" || b.Specialty != "110" || !b.FirstVisit ||
		!b.Contact.SMS || b.Contact.OptOut || b.AgeBand != "35-44" || b.Extra[ExtraDuration] != 30 {
		t.Fatalf("S13 without PID-13/AIL lost held facts: %+v", b)
	}
	// An S14 without PID at all (the gateway knows the patient), moving the clinic in AIL only.
	noPID := strings.NewReplacer("MSG00010", "MSG00011", "S13", "S14", "PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F\n", "",
		"TQ1|1||||||20250409141500\n", "AIL|1|U|ORTHO2\n").Replace(bare)
	if code, text := send(noPID); code != hl7.AA || text != "rescheduled version 3 published" {
		t.Fatalf("S14 without PID: %s %q", code, text)
	}
	if b := out.last().Booking; b.Clinic != "ORTHO2" || !b.Start.Equal(time.Date(2025, 4, 9, 13, 15, 0, 0, time.UTC)) || !b.Contact.SMS || b.AgeBand != "35-44" {
		t.Fatalf("S14 without PID: %+v", b)
	}
	// "" deletes: PID-13 "" (no mobile any more) changes no booking fact the scorer uses,
	// so nothing is published, but the next update merges onto it.
	delPhone := strings.NewReplacer("MSG00010", "MSG00012", "S13", "S14", "19800615|F", `19800615|F|||||""`,
		"TQ1|1||||||20250409141500\n", "").Replace(bare)
	if code, text := send(delPhone); code != hl7.AA || !strings.HasPrefix(text, "ignored: booking facts unchanged") {
		t.Fatalf("S14 deleting PID-13: %s %q", code, text)
	}
	moved := strings.NewReplacer("MSG00010", "MSG00013", "20250409141500", "20250410090000").Replace(bare)
	if code, text := send(moved); code != hl7.AA || text != "rescheduled version 4 published" {
		t.Fatalf("S13 after the deletion: %s %q", code, text)
	}
	if b := out.last().Booking; b.Contact.SMS || b.Clinic != "ORTHO2" {
		t.Fatalf("deleted mobile or held clinic not honoured: %+v", b)
	}
	// AIL-3 "" deletes the AIL clinic; the clinic falls back to PV1-3 held from the S12.
	delClinic := strings.NewReplacer("MSG00010", "MSG00014", "S13", "S14", "TQ1|1||||||20250409141500\n", `AIL|1|D|""`+"\n").Replace(bare)
	if code, text := send(delClinic); code != hl7.AA || text != "rescheduled version 5 published" || out.last().Booking.Clinic != "ORTHO1" {
		t.Fatalf("AIL-3 deleted: %s %q clinic %q, want PV1-3's ORTHO1", code, text, out.last().Booking.Clinic)
	}
	// A start sent only in AIS-4 replaces the one held in TQ1-7: the start is one fact.
	aisStart := strings.NewReplacer("MSG00010", "MSG00015", "TQ1|1||||||20250409141500\n", "AIS|1|U|110|20250411100000\n").Replace(bare)
	if code, text := send(aisStart); code != hl7.AA || !strings.HasSuffix(text, "published") {
		t.Fatalf("S13 with the start in AIS-4: %s %q", code, text)
	}
	if b := out.last().Booking; !b.Start.Equal(time.Date(2025, 4, 11, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("start %s, want the one in AIS-4", b.Start)
	}
}

// An update for an appointment the gateway does not know (it started after the booking) has
// nothing to merge onto: what it leaves out is missing, and it is refused naming the field.
func TestUpdateOfUnknownAppointmentNeedsItsFacts(t *testing.T) {
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: pas.NewGateway(&pas.MemoryTracker{}, &captured{}, nil)}
	noDOB := strings.Replace(s13, "||19800615|F", "|||F", 1)
	code, _, text, e := ackOf(t, only(t, h.Message(context.Background(), wire(noDOB))))
	if code != hl7.AE || !strings.Contains(text, "PID-7") || e.Field(2).Comp(1).String() != "PID" || e.Field(2).Comp(3).String() != "7" {
		t.Fatalf("%s %q ERR %v", code, text, e)
	}
	noPID := strings.Replace(s13, "PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F\n", "", 1)
	if code, _, text, _ := ackOf(t, only(t, h.Message(context.Background(), wire(noPID)))); code != hl7.AE || !strings.Contains(text, "names no patient") {
		t.Fatalf("%s %q", code, text)
	}
}
