package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Holdout withholds the extra reminder from a fixed share of the bookings that would get
// it, so the reminder's effect on non-attendance can be measured rather than assumed (a
// service evaluation: it needs local approval, and production configs leave Share at 0).
// Standard reminders are never withheld. Which bookings are held out is decided by a keyed
// hash of the appointment id alone (Arm), so the dispatcher, the monitor and the simulator
// assign every appointment to the same arm, every time, without sharing any state.
type Holdout struct {
	// Share of appointments held out from extra reminders, 0 (none) to 0.5.
	Share float64 `json:"share"`
	// Key is the secret the assignment is keyed with (DNA_HOLDOUT_KEY); never in a config
	// file. Without a key nobody could reproduce the assignment, so a Share above 0 needs one.
	Key []byte `json:"-"`
}

// MaxHoldoutShare bounds Holdout.Share: holding out more than half the high-risk bookings
// is not an evaluation any trust would approve.
const MaxHoldoutShare = 0.5

// Validate reports a share out of range, or a share without a key.
func (h *Holdout) Validate() error {
	switch {
	case h == nil || h.Share == 0:
		return nil
	case math.IsNaN(h.Share) || h.Share < 0 || h.Share > MaxHoldoutShare:
		return fmt.Errorf("policy extra_holdout share %v out of range 0..%v", h.Share, MaxHoldoutShare)
	case len(h.Key) < 16:
		return errors.New("policy extra_holdout share is above 0 but the hold-out key (DNA_HOLDOUT_KEY) is missing or shorter than 16 bytes")
	}
	return nil
}

// HeldOut reports whether appointmentID is in the held-out arm. A nil Holdout or a zero
// Share holds nothing out.
func (h *Holdout) HeldOut(appointmentID string) bool {
	if h == nil || h.Share <= 0 {
		return false
	}
	return Arm(h.Key, appointmentID) < h.Share
}

// Arm maps an appointment id to a number in [0, 1) with HMAC-SHA256 under key: uniform, and
// unpredictable without the key, so nobody can steer a booking into either arm.
func Arm(key []byte, appointmentID string) float64 {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(appointmentID))
	return float64(binary.BigEndian.Uint64(m.Sum(nil))>>11) / (1 << 53)
}
