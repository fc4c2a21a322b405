package events

import (
	"errors"
	"fmt"
	"time"
)

// DefaultMaxAhead is how far an event may be dated past the moment it was published. A PAS
// never dates a message in the future beyond clock skew; one dated decades ahead would prune
// the patient's history (pruning is relative to the newest fact), so it is refused. The
// scorer, the reminder dispatcher and the PAS gateway share this value (--max-ahead,
// MAX_EVENT_AHEAD).
const DefaultMaxAhead = 7 * 24 * time.Hour

// ErrFuture marks an event dated further past its reference time than allowed.
var ErrFuture = errors.New("event dated in the future")

// CheckAhead is the one acceptance rule for event times: an event is refused when its
// event_time lies more than maxAhead after ref, the time it was published (see Reference).
// maxAhead <= 0 means no limit (replaying a simulated future). The error wraps ErrFuture.
//
// The gateway applies it where a message enters (and answers the sender), with ref its clock
// at receipt, and publishes the event with that same time as the Kafka timestamp; every reader
// applies it against the Kafka timestamp. So gateway, scorer and dispatcher reach the same
// decision for every event whatever their clocks say or however late they read it.
func CheckAhead(eventTime, ref time.Time, maxAhead time.Duration) error {
	if maxAhead <= 0 || !eventTime.After(ref.Add(maxAhead)) {
		return nil
	}
	return fmt.Errorf("%w: event_time %s is more than %s after the time it was sent (%s)",
		ErrFuture, eventTime.UTC().Format(time.RFC3339), maxAhead, ref.UTC().Format(time.RFC3339))
}

// Reference is the time CheckAhead measures an event read from Kafka against: the message's
// timestamp (set by its producer when it published, or by the broker with LogAppendTime), or
// now when the message has none.
func Reference(msgTime, now time.Time) time.Time {
	if msgTime.IsZero() {
		return now
	}
	return msgTime
}
