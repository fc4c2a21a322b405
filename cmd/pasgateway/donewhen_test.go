package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
)

// engineS13 is a reschedule as integration engines send it: only what changed. No PID-13
// (phone), no PD1, no AIL, no PV1, no AIS; LF line ends; a Z-segment; PID-3 repeated with
// assigning authorities.
func engineS13(ctrl, appt string, at, start time.Time) string {
	return fmt.Sprintf(`MSH|^~\&|PAS|RXX01|DNARISK|RXX01|%s||SIU^S13^SIU_S12|%s|P|2.5.1
SCH||%s^PAS||||||||||||||||||||||Booked
TQ1|1||||||%s
PID|1||A123456^^^RXX01^MR~9434765919^^^NHS^NH||SMITH^JANE||19800615|F
ZSC|1|Rescheduled by clinic admin
RGS|1
`, ts(at), ctrl, appt, ts(start))
}

// pending returns appointment appt's pending reminders: reminder id → due time.
func pending(t *testing.T, w *world, d *reminders.Dispatcher, appt string) map[string]time.Time {
	t.Helper()
	zs, err := w.rdb.ZRangeWithScores(context.Background(), d.DueKey(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, z := range zs {
		parts := strings.SplitN(z.Member.(string), ":", 3)
		if len(parts) == 3 && parts[2] == appt {
			out[parts[1]] = time.UnixMilli(int64(z.Score)).UTC()
		}
	}
	return out
}

// TestIssue12DoneWhen is issue 12's acceptance test, on real Kafka and Redis through the
// gateway (MLLP), the scorer and the reminder dispatcher: S12 with a mobile → S13 without
// PID-13 or AIL → S15 → S26 of another appointment. The S13 re-times the reminders (nothing
// cancelled as opt-out); the S15 cancels them and its cancellation is in the patient's
// history; the S26's did-not-attend is in history; every message is AA, nothing is
// dead-lettered, and no identifier appears in any topic or log.
func TestIssue12DoneWhen(t *testing.T) {
	w := newWorld(t)
	d := newDispatcher(t, w)
	remPrefix := d.DueKey()[:len(d.DueKey())-len("reminders:due")]
	feed := func() {
		t.Helper()
		if err := d.Process(context.Background(), append(w.read(w.in), w.read(w.risk)...)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	run := now.UnixNano()
	apptA, apptB := fmt.Sprintf("DA%d", run), fmt.Sprintf("DB%d", run)
	patient := w.ps.Pseudonym("9434765919")
	expect := func(name, msg, want string) {
		t.Helper()
		if code, text := w.send(msg); code != "AA" || text != want {
			t.Fatalf("%s: %s %q, want AA %q", name, code, text, want)
		}
	}

	// B: booked a month ago for an hour ago (before A, so the S26 is the last message).
	bookedB, startB := now.Add(-30*24*time.Hour), now.Add(-time.Hour)
	expect("S12 B", siuMsg("S12", "D0", apptB, bookedB, startB, ""), "booked version 1 published")

	// A: S12 with a mobile in PID-13, for three weeks on.
	startA := now.Add(21 * 24 * time.Hour)
	expect("S12", siuMsg("S12", "D1", apptA, now, startA, ""), "booked version 1 published")
	w.waitRisk(ns(apptA), 1)
	feed()
	before := pending(t, w, d, ns(apptA))
	if len(before) == 0 {
		t.Fatal("no reminders planned for the S12")
	}

	// S13 without PID-13, PD1, AIL, PV1: two days later.
	startA2 := startA.Add(48 * time.Hour)
	expect("S13", engineS13("D2", apptA, now.Add(time.Minute), startA2), "rescheduled version 2 published")
	w.waitRisk(ns(apptA), 2)
	feed()
	after := pending(t, w, d, ns(apptA))
	if len(after) != len(before) {
		t.Fatalf("%d reminders pending after the S13, %d before: re-timing should keep them all", len(after), len(before))
	}
	for rid, due := range after {
		if _, old := before[rid]; old {
			t.Errorf("pending reminder %s is still version 1's", rid)
		}
		if !due.After(now.Add(time.Hour)) || !due.Before(startA2) {
			t.Errorf("reminder due %s, not before the new start %s", due, startA2)
		}
	}
	var shifted int
	for _, due := range after {
		for _, old := range before {
			if due.Sub(old) == 48*time.Hour {
				shifted++
			}
		}
	}
	if shifted == 0 {
		t.Errorf("no reminder moved with the appointment: before %v after %v", before, after)
	}
	for rid := range before {
		reason, _ := w.rdb.HGet(context.Background(), remPrefix+"{"+patient+"}:rem:"+rid, "reason").Result()
		if reason != "replanned" {
			t.Errorf("version 1 reminder dropped as %q, want replanned (never opt_out)", reason)
		}
	}

	// S15: cancelled by the patient.
	expect("S15", siuMsg("S15", "D3", apptA, now.Add(2*time.Minute), startA2, "2^Cancelled by patient"), "cancelled version 2 published")
	feed()
	if left := pending(t, w, d, ns(apptA)); len(left) != 0 {
		t.Fatalf("%d reminders still pending after the S15", len(left))
	}
	for rid := range after {
		if reason, _ := w.rdb.HGet(context.Background(), remPrefix+"{"+patient+"}:rem:"+rid, "reason").Result(); reason != "cancelled" {
			t.Errorf("reminder %s dropped as %q, want cancelled", rid, reason)
		}
	}

	// S26 for B.
	expect("S26", siuMsg("S26", "D4", apptB, now.Add(3*time.Minute), startB, ""), "did_not_attend version 1 published")
	testenv.Eventually(t, 60*time.Second, func() bool {
		hs, err := w.store.Load(context.Background(), []string{patient})
		if err != nil {
			t.Fatal(err)
		}
		var dna, cancelled bool
		for _, f := range hs[patient].Facts {
			dna = dna || f.Appointment == ns(apptB) && f.Kind == featurestore.KindDidNotAttend
			cancelled = cancelled || f.Appointment == ns(apptA) && f.Kind == featurestore.KindPatientCancel
		}
		return dna && cancelled
	}, "the S15 patient cancellation and the S26 did-not-attend in the patient's history")

	if dl := w.read(w.dlq); len(dl) != 0 {
		t.Fatalf("%d events dead-lettered", len(dl))
	}
	var evs []string
	for _, ev := range w.appointments() {
		if ev.AppointmentID == ns(apptA) || ev.AppointmentID == ns(apptB) {
			evs = append(evs, ev.AppointmentID[len("RXX01:"):][:2]+":"+string(ev.Type)+":v"+strconv.Itoa(ev.Version))
			if ev.Booking != nil && (!ev.Booking.Contact.SMS || ev.Booking.Clinic != "ORTHO1" || ev.Booking.Specialty != "110") {
				t.Errorf("%s lost held facts: %+v", ev.Type, ev.Booking)
			}
		}
	}
	if got := strings.Join(evs, " "); got != "DB:booked:v1 DA:booked:v1 DA:rescheduled:v2 DA:cancelled:v2 DB:did_not_attend:v1" {
		t.Fatalf("events: %s", got)
	}

	// No identifier anywhere: not on any topic, not in the gateway's, the scorer's or the dispatcher's log,
	// not in the gateway's Redis state.
	var all strings.Builder
	for _, topic := range []string{w.in, w.risk, w.dlq} {
		for _, m := range w.read(topic) {
			all.Write(m.Key)
			all.Write(m.Value)
			for _, h := range m.Headers {
				all.Write(h.Value)
			}
		}
	}
	state, _ := w.rdb.HGetAll(context.Background(), w.prefix+"pas:appt:"+ns(apptA)).Result()
	if len(state) == 0 {
		t.Fatal("no gateway state found for the appointment; the check below would prove nothing")
	}
	b, _ := json.Marshal(state)
	all.Write(b)
	all.WriteString(w.logs.String())
	if !strings.Contains(w.logs.String(), apptA) {
		t.Fatal("the logs say nothing about the appointment; the check below would prove nothing")
	}
	for _, id := range []string{"9434765919", "943 476 5919", "A123456", "SMITH", "JANE", "19800615", "1980-06-15", "7700900123", "900123"} {
		if strings.Contains(all.String(), id) {
			t.Errorf("%q found in a topic, the gateway state or a log", id)
		}
	}
}
