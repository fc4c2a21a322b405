package siu

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// The mobile in PID-13/PID-14 as engines write it, picked for the contact store.
func TestMapContactNumber(t *testing.T) {
	m := mapper(t, Config{})
	for _, c := range []struct {
		name, pid13, pid14 string
		want               string // "" = no mobile
	}{
		{"XTN-5/6/7 with equipment CP", "^PRN^PH^^44^113^4960000~^ORN^CP^^44^7700^900123", "", "07700900123"},
		{"CP first even if listed later", "^PRN^PH^^^^^^^^^07700900111~^PRN^CP^^^^^^^^^07700900222", "", "07700900222"},
		{"v2.3 formatted number in XTN-1", "07700 900123^PRN^PH", "", "07700900123"},
		{"international form", "+44 (0)7700-900123^PRN^CP", "", ""}, // "(0)" is not a mobile we can be sure of
		{"XTN-12 unformatted", "^PRN^PH^^^^^^^^^+447700900123", "", "07700900123"},
		{"work mobile in PID-14", "^PRN^PH^^44^113^4960000", "^WPN^CP^^44^7700^900124", "07700900124"},
		{"e-mail in a mobile-looking field", "^NET^Internet^07700900123", "", ""},
		{"landline only", "^PRN^PH^^44^113^4960000", "", ""},
	} {
		msg := strings.Replace(s12v251, "^PRN^PH^^44^113^4960000~^ORN^CP^^44^7700^900123", c.pid13+"|"+c.pid14, 1)
		ch, _, err := mapMsg(t, m, msg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ch.Contact == nil || !ch.Contact.PhoneSent || ch.Contact.Mobile.Reveal() != c.want {
			t.Errorf("%s: contact %+v (%q), want %q", c.name, ch.Contact, revealed(ch.Contact), c.want)
		}
	}
	// PD1-12 Y is an opt-out; an update without PID-13/14 and PD1-12 says nothing.
	ch, _, _ := mapMsg(t, m, s12v23)
	if c := ch.Contact; c == nil || !c.OptOutSent || !c.OptOut || !c.PhoneSent || !c.Mobile.IsZero() {
		t.Errorf("v2.3 with a landline and PD1-12 Y: %+v", c)
	}
	ch, _, _ = mapMsg(t, m, s13)
	if ch.Contact != nil {
		t.Errorf("S13 without PID-13, PID-14 or PD1 says something: %+v", ch.Contact)
	}
	// PID-13 "" deletes the number.
	ch, _, _ = mapMsg(t, m, strings.Replace(s13, "19800615|F", `19800615|F|||||""`, 1))
	if c := ch.Contact; c == nil || !c.PhoneSent || !c.Mobile.IsZero() {
		t.Errorf(`PID-13 "": %+v`, c)
	}
	if s := fmt.Sprintf("%v %+v %#v", ch.Contact, *ch.Contact, ch.Contact); strings.Contains(s, "7700") {
		t.Fatalf("contact prints its number: %s", s)
	}
}

func revealed(c *pas.Contact) string {
	if c == nil {
		return ""
	}
	return c.Mobile.Reveal()
}

// contactLog records what the gateway stores.
type contactLog struct {
	mu    sync.Mutex
	saved map[string]pas.Contact
}

func (l *contactLog) SaveContact(_ context.Context, patient string, c pas.Contact) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.saved == nil {
		l.saved = map[string]pas.Contact{}
	}
	old := l.saved[patient]
	if c.PhoneSent {
		old.PhoneSent, old.Mobile = true, c.Mobile
	}
	if c.OptOutSent {
		old.OptOutSent, old.OptOut = true, c.OptOut
	}
	l.saved[patient] = old
	return nil
}

// Through the handler and a real gateway: an S12 stores the mobile, an S13 without PID-13
// keeps it, a message the gateway refuses (a start before the booking) stores nothing, and no number reaches an event or the ACK.
func TestGatewayFillsTheContactStore(t *testing.T) {
	out, store := &captured{}, &contactLog{}
	g := pas.NewGateway(&pas.MemoryTracker{}, out, nil)
	g.SetContacts(store)
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: g}
	patient := mapper(t, Config{}).cfg.Pseudonymiser.Pseudonym("9434765919")
	var acks []string
	for _, msg := range []string{s12v251, s13, strings.NewReplacer("MSG00003", "MSG00009", "19800615|F", "19800615|F|||||^PRN^CP^^^^^^^^^07700900999", "20250409141500", "20250301090000").Replace(s13)} {
		ack := only(t, h.Message(context.Background(), wire(msg)))
		acks = append(acks, string(ack))
	}
	if got := store.saved[patient]; got.Mobile.Reveal() != "07700900123" || !got.OptOutSent || got.OptOut {
		t.Fatalf("stored %q opt-out %v/%v", got.Mobile.Reveal(), got.OptOutSent, got.OptOut)
	}
	if code, _, _, _ := ackOf(t, []byte(acks[2])); code != hl7.AE {
		t.Fatalf("start before booking: %s", code)
	}
	for _, ev := range out.evs {
		if ev.Booking == nil || !ev.Booking.Contact.SMS {
			t.Fatalf("event lost the mobile flag: %+v", ev)
		}
	}
	if s := fmt.Sprint(out.evs, acks); strings.Contains(s, "7700") {
		t.Fatal("a number reached an event or an ACK")
	}
}
