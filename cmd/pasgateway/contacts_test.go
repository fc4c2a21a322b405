package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/reminders/contacts"
)

// The contact store on real Redis, filled by the gateway with the dispatcher's key: the S12's
// mobile is stored encrypted, an S13 without PID-13 keeps it, and an S14 with PD1-12 Y opts
// the patient out without touching the number. The number is in no topic and no log.
func TestContactStoreFilledFromMessages(t *testing.T) {
	w := newWorld(t)
	key, _ := contacts.ParseKey(contactKeyHex)
	store, err := contacts.NewStore(w.rdb, w.prefix, key)
	if err != nil {
		t.Fatal(err)
	}
	patient := w.ps.Pseudonym("9434765919")
	t.Cleanup(func() { w.rdb.Del(context.Background(), store.Key(patient)) })
	now := time.Now().UTC().Truncate(time.Second)
	appt := fmt.Sprintf("CT%d", now.UnixNano())
	start := now.Add(10 * 24 * time.Hour)
	check := func(step, number string, optOut bool) {
		t.Helper()
		c, err := store.Get(context.Background(), patient)
		if err != nil || c.Phone.Reveal() != number || c.OptOut != optOut {
			t.Fatalf("%s: stored %q opt-out %v (%v); want %q %v", step, c.Phone.Reveal(), c.OptOut, err, number, optOut)
		}
	}
	if code, text := w.send(siuMsg("S12", "K1", appt, now, start, "")); code != "AA" {
		t.Fatalf("S12: %s %q", code, text)
	}
	check("S12", "07700900123", false)
	if code, text := w.send(engineS13("K2", appt, now.Add(time.Minute), start.Add(time.Hour))); code != "AA" {
		t.Fatalf("S13: %s %q", code, text)
	}
	check("S13 without PID-13", "07700900123", false)
	optOut := strings.Replace(engineS13("K3", appt, now.Add(2*time.Minute), start.Add(time.Hour)), "ZSC|", "PD1||||||||||||Y\nZSC|", 1)
	if code, text := w.send(strings.Replace(optOut, "SIU^S13", "SIU^S14", 1)); code != "AA" {
		t.Fatalf("S14: %s %q", code, text)
	}
	check("S14 with PD1-12 Y", "07700900123", true)
	if raw := w.rdb.HGetAll(context.Background(), store.Key(patient)).Val(); strings.Contains(fmt.Sprint(raw), "900123") {
		t.Fatalf("stored in the clear: %v", raw)
	}
	for _, topic := range []string{w.in, w.risk} {
		for _, m := range w.read(topic) {
			if strings.Contains(string(m.Value), "900123") {
				t.Fatalf("number on topic %s", topic)
			}
		}
	}
	if strings.Contains(w.logs.String(), "900123") {
		t.Fatal("number in the log")
	}
}
