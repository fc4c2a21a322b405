package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// truthHeader is the header of a truth file.
var truthHeader = []string{"appointment_id", "booking_version", "p_dna"}

// TruthWriter writes Truth records as CSV with the header appointment_id,booking_version,
// p_dna. Errors are sticky: after the first, writes do nothing and Flush returns it.
type TruthWriter struct {
	w   *csv.Writer
	err error
	rec [3]string
}

// NewTruthWriter writes the header to w and returns a writer for the records.
func NewTruthWriter(w io.Writer) *TruthWriter {
	t := &TruthWriter{w: csv.NewWriter(w)}
	t.err = t.w.Write(truthHeader)
	return t
}

// Write adds one record.
func (t *TruthWriter) Write(tr Truth) error {
	if t.err != nil {
		return t.err
	}
	t.rec = [3]string{tr.AppointmentID, strconv.Itoa(tr.Version), strconv.FormatFloat(tr.PDNA, 'g', -1, 64)}
	t.err = t.w.Write(t.rec[:])
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

// ReadTruth reads a file written by TruthWriter.
func ReadTruth(r io.Reader) ([]Truth, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read truth header: %w", err)
	}
	if !slices.Equal(head, truthHeader) {
		return nil, fmt.Errorf("truth header %q, want %q", head, truthHeader)
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
		p, err := strconv.ParseFloat(rec[2], 64)
		if err != nil || !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("truth line %d: p_dna %q is not a probability", line, rec[2])
		}
		out = append(out, Truth{AppointmentID: rec[0], Version: v, PDNA: p})
	}
}
