package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Truth files. The short layout (appointment_id,booking_version,p_dna) is what training reads;
// the full layout adds the drift and reminder fields (p_drifted,eligible,held_out,p_used) for
// a world with Config.Drift or Config.Reminder set.
var (
	truthHeader     = []string{"appointment_id", "booking_version", "p_dna"}
	truthFullHeader = []string{"appointment_id", "booking_version", "p_dna", "p_drifted", "eligible", "held_out", "p_used"}
)

// TruthWriter writes Truth records as CSV with the header appointment_id,booking_version,
// p_dna (NewTruthWriter) or the full header (NewFullTruthWriter). Errors are sticky: after
// the first, writes do nothing and Flush returns it.
type TruthWriter struct {
	w    *csv.Writer
	err  error
	full bool
	rec  []string
}

// NewTruthWriter writes the short header to w and returns a writer for the records.
func NewTruthWriter(w io.Writer) *TruthWriter {
	t := &TruthWriter{w: csv.NewWriter(w)}
	t.err = t.w.Write(truthHeader)
	return t
}

// NewFullTruthWriter writes the full header (with p_drifted, eligible, held_out and p_used)
// to w and returns a writer for the records.
func NewFullTruthWriter(w io.Writer) *TruthWriter {
	t := &TruthWriter{w: csv.NewWriter(w), full: true}
	t.err = t.w.Write(truthFullHeader)
	return t
}

func formatP(p float64) string { return strconv.FormatFloat(p, 'g', -1, 64) }

// Write adds one record.
func (t *TruthWriter) Write(tr Truth) error {
	if t.err != nil {
		return t.err
	}
	t.rec = append(t.rec[:0], tr.AppointmentID, strconv.Itoa(tr.Version), formatP(tr.PDNA))
	if t.full {
		t.rec = append(t.rec, formatP(tr.PDrifted), strconv.FormatBool(tr.Eligible), strconv.FormatBool(tr.HeldOut), formatP(tr.PUsed))
	}
	t.err = t.w.Write(t.rec)
	return t.err
}

// Flush writes any buffered records and returns the first error met.
func (t *TruthWriter) Flush() error {
	t.w.Flush()
	if t.err == nil {
		t.err = t.w.Error()
	}
	return t.err
}

// ReadTruth reads a file written by TruthWriter, in either layout. A short-layout record
// reads as a world without drift or reminder effect: PDrifted and PUsed are PDNA.
func ReadTruth(r io.Reader) ([]Truth, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read truth header: %w", err)
	}
	full := slices.Equal(head, truthFullHeader)
	if !full && !slices.Equal(head, truthHeader) {
		return nil, fmt.Errorf("truth header %q, want %q or %q", head, truthHeader, truthFullHeader)
	}
	prob := func(line int, name, s string) (float64, error) {
		p, err := strconv.ParseFloat(s, 64)
		if err != nil || !(p >= 0 && p <= 1) {
			return 0, fmt.Errorf("truth line %d: %s %q is not a probability", line, name, s)
		}
		return p, nil
	}
	var out []Truth
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read truth: %w", err)
		}
		line, _ := cr.FieldPos(0)
		v, err := strconv.Atoi(rec[1])
		if err != nil {
			return nil, fmt.Errorf("truth line %d: booking_version: %w", line, err)
		}
		t := Truth{AppointmentID: rec[0], Version: v}
		if t.PDNA, err = prob(line, "p_dna", rec[2]); err != nil {
			return nil, err
		}
		t.PDrifted, t.PUsed = t.PDNA, t.PDNA
		if full {
			if t.PDrifted, err = prob(line, "p_drifted", rec[3]); err != nil {
				return nil, err
			}
			if t.Eligible, err = strconv.ParseBool(rec[4]); err != nil {
				return nil, fmt.Errorf("truth line %d: eligible %q is not true or false", line, rec[4])
			}
			if t.HeldOut, err = strconv.ParseBool(rec[5]); err != nil {
				return nil, fmt.Errorf("truth line %d: held_out %q is not true or false", line, rec[5])
			}
			if t.PUsed, err = prob(line, "p_used", rec[6]); err != nil {
				return nil, err
			}
		}
		out = append(out, t)
	}
}
