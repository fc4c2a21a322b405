package reminders

import (
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/reminders/policy"
)

func TestMember(t *testing.T) {
	p := strings.Repeat("a", 64)
	r := strings.Repeat("b", 32)
	for _, appt := range []string{"A1", "with:colons:in", "x"} {
		gp, gr, ga, ok := parseMember(member(p, r, appt))
		if !ok || gp != p || gr != r || ga != appt {
			t.Fatalf("%q -> %q %q %q %v", appt, gp, gr, ga, ok)
		}
	}
	if _, _, _, ok := parseMember("short"); ok {
		t.Fatal("short member parsed")
	}
}

// slowNotifier can take up to a minute per send.
type slowNotifier struct{ Notifier }

func (slowNotifier) Longest() time.Duration { return time.Minute }

func TestConfigValidateChecksTheLeaseAgainstTheNotifier(t *testing.T) {
	base := Config{Policy: policy.DefaultPolicy(), Secret: make([]byte, MinSecretBytes),
		Templates: Templates{Standard: "f33517ff-2a88-4f6e-b855-c550268ce08a", Extra: "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"}}
	c := base
	c.Notifier, c.Lease = slowNotifier{}, 90*time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sending.lease 1m30s") {
		t.Fatalf("a lease shorter than two slowest sends: %v", err)
	}
	c.Lease = 2 * time.Minute
	if err := c.Validate(); err != nil {
		t.Fatalf("a lease of exactly two slowest sends: %v", err)
	}
	c = base
	if err := c.Validate(); err != nil || c.Lease != 10*time.Minute {
		t.Fatalf("defaults: lease %s, %v", c.Lease, err)
	}
	if _, err := New(base); err == nil || !strings.Contains(err.Error(), "Redis") {
		t.Fatalf("New without Redis: %v", err)
	}
}

// timedNotifier gives up on an attempt after 10s.
type timedNotifier struct{ Notifier }

func (timedNotifier) Timeout() time.Duration { return 10 * time.Second }

func TestConfigValidateChecksTheUncertainRecheck(t *testing.T) {
	base := Config{Policy: policy.DefaultPolicy(), Secret: make([]byte, MinSecretBytes),
		Templates: Templates{Standard: "f33517ff-2a88-4f6e-b855-c550268ce08a", Extra: "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"}}
	c := base
	if err := c.Validate(); err != nil || c.UncertainRecheck != time.Minute {
		t.Fatalf("defaults: uncertain recheck %s, %v", c.UncertainRecheck, err)
	}
	c = base
	c.Notifier, c.UncertainRecheck = timedNotifier{}, 10*time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sending.uncertain_recheck 10s must be longer than notify.timeout 10s") {
		t.Fatalf("a recheck no longer than the client's timeout: %v", err)
	}
	c.UncertainRecheck = 11 * time.Second
	if err := c.Validate(); err != nil {
		t.Fatalf("a recheck longer than the client's timeout: %v", err)
	}
	c = base
	c.Lease, c.UncertainRecheck = 3*time.Minute, 2*time.Minute
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sending.lease 3m0s is shorter than twice sending.uncertain_recheck") {
		t.Fatalf("a lease shorter than two rechecks: %v", err)
	}
	c.Lease = 4 * time.Minute
	if err := c.Validate(); err != nil {
		t.Fatalf("a lease of exactly two rechecks: %v", err)
	}
}
