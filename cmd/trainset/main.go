// Command trainset turns a history of appointment events into a training set for
// training/train.py. It replays the events in event-time order through the same feature code
// as the live consumer (featurestore.Compute on the patient's history, read before the event
// is applied), so every row holds exactly what was known when the booking was scored, and
// labels each row with the appointment's eventual outcome.
//
//	trainset -in events.jsonl [-truth truth.csv] [-out trainset.csv] [-history-retention 26280h]
//
// Input is JSONL, one appointment.v1 event per line (cmd/producer --out writes it), sorted by
// event_time; an unsorted or invalid line is refused with its line number. The truth file
// (cmd/producer --truth, CSV appointment_id,booking_version,p_dna) is optional and only fills
// the p_dna column, so a model card can compare the model with the simulator's ground truth.
//
// Output is CSV: appointment_id, booking_version, event_time (RFC 3339), every
// featurestore.Names column (empty for missing), label (1 did not attend, 0 attended) and
// p_dna. Only the final version of an appointment that ended in attended or did-not-attend is
// a row; superseded, cancelled and unfinished bookings are counted on stderr.
package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/sim"
)

func main() {
	in := flag.String("in", "", "appointment events, JSONL sorted by event_time (- for stdin)")
	truth := flag.String("truth", "", "optional truth CSV (appointment_id,booking_version,p_dna)")
	out := flag.String("out", "-", "training set CSV to write (- for stdout)")
	retention := flag.Duration("history-retention", 3*365*24*time.Hour, "how long facts stay in a patient's history; must equal the consumer's --history-retention or training and serving features differ")
	flag.Parse()
	if *in == "" || flag.NArg() > 0 || *retention < 24*time.Hour {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*in, *truth, *out, featurestore.Policy{Retention: *retention}); err != nil {
		fmt.Fprintln(os.Stderr, "trainset:", err)
		os.Exit(1)
	}
}

func run(inPath, truthPath, outPath string, policy featurestore.Policy) error {
	var pdna map[key]float64
	if truthPath != "" {
		f, err := os.Open(truthPath)
		if err != nil {
			return err
		}
		ts, err := sim.ReadTruth(bufio.NewReader(f))
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", truthPath, err)
		}
		pdna = make(map[key]float64, len(ts))
		for _, t := range ts {
			pdna[key{t.AppointmentID, t.Version}] = t.PDNA
		}
	}
	in := io.Reader(os.Stdin)
	if inPath != "-" {
		f, err := os.Open(inPath)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	r := newReplay()
	r.policy = policy
	if err := r.read(context.Background(), in); err != nil {
		return fmt.Errorf("%s: %w", inPath, err)
	}
	out := io.Writer(os.Stdout)
	var f *os.File
	if outPath != "-" {
		var err error
		if f, err = os.Create(outPath); err != nil {
			return err
		}
		out = f
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	n, err := r.writeCSV(bw, pdna)
	if err == nil {
		err = bw.Flush()
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", outPath, err)
	}
	s := r.stats
	fmt.Fprintf(os.Stderr, "trainset: %d events, %d patients, %d bookings scored: %d training rows (%d did not attend, %d attended); left out %d superseded by a reschedule, %d cancelled, %d without an outcome, %d duplicate bookings; %d rows without p_dna\n",
		s.events, r.store.Len(), s.scored, n, s.dna, s.attended, s.superseded, s.cancelled, s.noOutcome, s.duplicates, s.noTruth)
	return nil
}

type key struct {
	appointment string
	version     int
}

// row is one scored booking: its features as the live consumer would have computed them.
type row struct {
	key
	at  time.Time
	seq int // position in the stream
	v   featurestore.Vector
}

// fate is what became of an appointment by the end of the stream.
type fate struct {
	latest     int // highest booking version seen
	cancelled  bool
	outcome    events.Type // latest outcome event, "" if none
	outcomeSeq int
}

type stats struct {
	events, scored, duplicates            int
	superseded, cancelled, noOutcome, dna int
	attended, noTruth                     int
}

// replay holds the state of one pass over the events. Histories live in a MemoryStore and
// go through Load, Compute, Apply, Save exactly as in the live consumer.
type replay struct {
	store  featurestore.MemoryStore
	policy featurestore.Policy
	rows   []row
	seen   map[key]bool
	fates  map[string]*fate
	stats  stats
}

func newReplay() *replay {
	return &replay{seen: map[key]bool{}, fates: map[string]*fate{}}
}

// read replays JSONL events from in. Events must be valid appointment.v1 events in
// non-decreasing event_time order.
func (r *replay) read(ctx context.Context, in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<16), events.MaxEventBytes+2)
	var last time.Time
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		ev, err := events.DecodeAppointment(b)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if ev.EventTime.Before(last) {
			return fmt.Errorf("line %d: event_time %s is before the previous event's %s: input must be sorted by event_time (sort -s by event_time, or regenerate it)",
				line, ev.EventTime.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
		}
		last = ev.EventTime
		if err := r.apply(ctx, &ev); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d bytes", line+1, events.MaxEventBytes)
		}
		return err
	}
	return nil
}

// apply scores ev if it is a booking (features from the history before ev), then records ev
// in the patient's history, as the live consumer does.
func (r *replay) apply(ctx context.Context, ev *events.Appointment) error {
	seq := r.stats.events
	r.stats.events++
	hs, err := r.store.Load(ctx, []string{ev.Patient})
	if err != nil {
		return err
	}
	h := hs[ev.Patient]
	f := r.fates[ev.AppointmentID]
	if f == nil {
		f = &fate{}
		r.fates[ev.AppointmentID] = f
	}
	switch ev.Type {
	case events.Booked, events.Rescheduled:
		k := key{ev.AppointmentID, ev.Version}
		if r.seen[k] {
			r.stats.duplicates++
			break
		}
		r.seen[k] = true
		r.stats.scored++
		r.rows = append(r.rows, row{key: k, at: ev.EventTime, seq: seq, v: featurestore.Compute(ev, h)})
		f.latest = max(f.latest, ev.Version)
	case events.Cancelled:
		f.cancelled = true
	case events.Attended, events.DidNotAttend:
		f.outcome, f.outcomeSeq = ev.Type, seq
	}
	if h.Apply(ev, r.policy) {
		return r.store.Save(ctx, hs)
	}
	return nil
}

// label returns a row's label, or ok=false (counted in stats) if it is not a training row.
func (r *replay) label(rw *row) (label int, ok bool) {
	f := r.fates[rw.appointment]
	switch {
	case rw.version < f.latest:
		r.stats.superseded++
	case f.cancelled:
		r.stats.cancelled++
	case f.outcome == "" || f.outcomeSeq < rw.seq:
		r.stats.noOutcome++
	case f.outcome == events.DidNotAttend:
		r.stats.dna++
		return 1, true
	default:
		r.stats.attended++
		return 0, true
	}
	return 0, false
}

// writeCSV writes the labelled rows in stream order and returns how many it wrote.
func (r *replay) writeCSV(w io.Writer, pdna map[key]float64) (int, error) {
	cw := csv.NewWriter(w)
	header := append([]string{"appointment_id", "booking_version", "event_time"}, featurestore.Names...)
	if err := cw.Write(append(header, "label", "p_dna")); err != nil {
		return 0, err
	}
	rec := make([]string, 0, len(header)+2)
	n := 0
	for i := range r.rows {
		rw := &r.rows[i]
		label, ok := r.label(rw)
		if !ok {
			continue
		}
		rec = append(rec[:0], rw.appointment, strconv.Itoa(rw.version), rw.at.UTC().Format(time.RFC3339Nano))
		for _, x := range rw.v {
			rec = append(rec, formatFloat(x))
		}
		rec = append(rec, strconv.Itoa(label))
		if p, ok := pdna[rw.key]; ok {
			rec = append(rec, strconv.FormatFloat(p, 'g', -1, 64))
		} else {
			rec = append(rec, "")
			r.stats.noTruth++
		}
		if err := cw.Write(rec); err != nil {
			return n, err
		}
		n++
	}
	cw.Flush()
	return n, cw.Error()
}

// formatFloat writes the shortest text that parses back to x exactly; "" for missing.
func formatFloat(x float64) string {
	if math.IsNaN(x) {
		return ""
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}
