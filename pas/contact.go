package pas

import (
	"context"
	"log/slog"
)

// Mobile is a UK mobile number read from a message, in national form (07xxxxxxxxx). It
// prints as "[redacted]" in logs, errors and JSON; only Reveal gives the digits, for the
// contact store.
type Mobile struct{ n string }

// Reveal returns the digits.
func (m Mobile) Reveal() string { return m.n }

// IsZero reports whether m holds no number.
func (m Mobile) IsZero() bool { return m.n == "" }

func (Mobile) String() string               { return "[redacted]" }
func (Mobile) GoString() string             { return "pas.Mobile{[redacted]}" }
func (Mobile) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Mobile) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// ParseMobile returns the UK mobile number in a telephone number as a PAS writes it (07…,
// +447…, 00447…, 447…, with spaces, dashes or brackets, perhaps an extension after it), and
// whether there was one.
func ParseMobile(number string) (Mobile, bool) {
	var d []byte
scan:
	for _, r := range number {
		switch {
		case r >= '0' && r <= '9':
			d = append(d, byte(r))
		case r == '+' && len(d) == 0:
			d = append(d, '0', '0')
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		case len(d) > 0:
			break scan // an extension or note after the number ("x123")
		default:
			return Mobile{}, false
		}
	}
	n := string(d)
	switch {
	case len(n) == 14 && n[:5] == "00447":
		return Mobile{"0" + n[4:]}, true
	case len(n) == 12 && n[:3] == "447":
		return Mobile{"0" + n[2:]}, true
	case len(n) == 11 && n[:2] == "07":
		return Mobile{n}, true
	}
	return Mobile{}, false
}

// Contact is what a message says about reaching its patient. A nil *Contact in a Change means
// the message says nothing (HL7: no PID-13/PID-14 and no PD1-12; FHIR: no Patient sent), and
// the stored record is kept.
type Contact struct {
	// PhoneSent: the message carried its telephone fields; Mobile then replaces the stored
	// number, and a zero Mobile (no mobile among them, or "") deletes it.
	PhoneSent bool
	Mobile    Mobile
	// OptOutSent: the message carried the opt-out (PD1-12; FHIR Patient.meta.security).
	OptOutSent bool
	OptOut     bool
}

// Contacts keeps what the reminder dispatcher needs to reach a patient, keyed by pseudonym:
// the mobile number (encrypted at rest) and the opt-out. SaveContact changes what c says was
// sent and keeps the rest. cmd/pasgateway adapts reminders/contacts.Store to it.
type Contacts interface {
	SaveContact(ctx context.Context, patient string, c Contact) error
}
