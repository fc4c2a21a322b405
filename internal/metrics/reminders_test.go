package metrics

import (
	"testing"
	"time"
)

func TestRemindersTodayStartsAgainAtLocalMidnight(t *testing.T) {
	london, _ := time.LoadLocation("Europe/London")
	now := time.Date(2025, 6, 2, 22, 30, 0, 0, time.UTC) // 23:30 in London (BST)
	counts := ReminderCounts{Sent: 5, Failed: 1}
	c := &reminderCollector{counts: func() ReminderCounts { return counts }, loc: london, now: func() time.Time { return now }}
	if got := c.today(counts); got.Sent != 5 || got.Failed != 1 {
		t.Fatalf("first day: %+v, want everything since start", got)
	}
	counts.Sent = 9
	now = now.Add(45 * time.Minute) // 00:15 in London, 23:15 UTC: a new day in London only
	if got := c.today(counts); got.Sent != 0 || got.Failed != 0 {
		t.Fatalf("after midnight: %+v, want zero", got)
	}
	counts.Sent, counts.Cancelled = 12, 2
	if got := c.today(counts); got.Sent != 3 || got.Cancelled != 2 {
		t.Fatalf("later that day: %+v, want 3 sent, 2 cancelled", got)
	}
}
