package events

import (
	"errors"
	"testing"
	"time"
)

func TestCheckAhead(t *testing.T) {
	ref := time.Date(2025, 3, 10, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		at     time.Time
		max    time.Duration
		refuse bool
	}{
		{ref.Add(-24 * time.Hour), DefaultMaxAhead, false},
		{ref.Add(DefaultMaxAhead), DefaultMaxAhead, false}, // the limit itself is allowed
		{ref.Add(DefaultMaxAhead + time.Second), DefaultMaxAhead, true},
		{ref.AddDate(70, 0, 0), DefaultMaxAhead, true},
		{ref.AddDate(70, 0, 0), 0, false},  // no limit
		{ref.AddDate(70, 0, 0), -1, false}, // no limit
	} {
		err := CheckAhead(c.at, ref, c.max)
		if (err != nil) != c.refuse || err != nil && !errors.Is(err, ErrFuture) {
			t.Errorf("%s with max %s: %v", c.at, c.max, err)
		}
	}
	if got := Reference(time.Time{}, ref); !got.Equal(ref) {
		t.Errorf("no timestamp: %s", got)
	}
	if got := Reference(ref.Add(-time.Hour), ref); !got.Equal(ref.Add(-time.Hour)) {
		t.Errorf("with a timestamp: %s", got)
	}
}
