package clock

import (
	"testing"
	"time"
)

func TestManualClock(t *testing.T) {
	c := NewManual(time.Unix(0, 0))
	ch := c.After(time.Hour)
	c.Advance(59 * time.Minute)
	select {
	case <-ch:
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Minute)
	select {
	case got := <-ch:
		if !got.Equal(time.Unix(3600, 0)) {
			t.Fatalf("fired at %s", got)
		}
	default:
		t.Fatal("did not fire")
	}
}
