package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/scoring"
)

// The flip check is the point-in-time property stated as a counterfactual: replay the same
// input again with every outcome recorded after a cut-off flipped (attended <-> did not
// attend). A row booked at or before the cut-off was scored before those outcomes existed, so
// none of its features or extras may change; later rows do change (prior_dna, ...), which
// shows the check can fail. trainset -flip-check runs it on the real input and writes the
// report train.py reads to refuse a leaking training set; TestPropertyFutureOutcomesInvisible
// runs the same functions on random streams.

// flipReport is the -flip-check JSON.
type flipReport struct {
	CutOff          time.Time `json:"cut_off"`
	OutcomesFlipped int       `json:"outcomes_flipped"`
	RowsBefore      int       `json:"rows_at_or_before_cut_off"`
	RowsAfter       int       `json:"rows_after_cut_off"`
	// Columns are the training-set columns compared: every feature, then extra.<key>.
	Columns []string `json:"columns"`
	// ChangedBefore counts, per column, rows booked at or before the cut-off whose value
	// changed when later outcomes were flipped: all must be 0. ChangedAfter counts later
	// rows, some of which must change.
	ChangedBefore map[string]int `json:"changed_at_or_before_cut_off"`
	ChangedAfter  map[string]int `json:"changed_after_cut_off"`
	// OK: no row at or before the cut-off changed, and some later row did.
	OK bool `json:"ok"`
}

// flipOutcomesAfter returns a replay transform that turns every attended event recorded
// after cut into did_not_attend and back, counting the flips in *n.
func flipOutcomesAfter(cut time.Time, n *int) func(*events.Appointment) {
	return func(ev *events.Appointment) {
		if !ev.EventTime.After(cut) {
			return
		}
		switch ev.Type {
		case events.Attended:
			ev.Type = events.DidNotAttend
			*n++
		case events.DidNotAttend:
			ev.Type = events.Attended
			*n++
		}
	}
}

// flipCutOff is the event time of the middle scored booking: half the rows are compared,
// half show the check has teeth.
func flipCutOff(r *replay) time.Time {
	if len(r.rows) == 0 {
		return time.Time{}
	}
	return r.rows[len(r.rows)/2].at
}

// compareReplays compares the rows of replay a (the input as it is) with those of b (the
// same input with outcomes after cut flipped), column by column.
func compareReplays(a, b *replay, cut time.Time, flipped int) (flipReport, error) {
	cols := slices.Clone(featurestore.Names)
	for _, k := range a.extras {
		cols = append(cols, scoring.ExtraPrefix+k)
	}
	rep := flipReport{CutOff: cut.UTC(), OutcomesFlipped: flipped, Columns: cols, ChangedBefore: map[string]int{}, ChangedAfter: map[string]int{}}
	for _, c := range cols {
		rep.ChangedBefore[c], rep.ChangedAfter[c] = 0, 0
	}
	if len(a.rows) != len(b.rows) {
		return rep, fmt.Errorf("flip check: %d rows as given, %d with later outcomes flipped: flipping outcomes must not change which bookings are scored", len(a.rows), len(b.rows))
	}
	same := func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }
	after := 0
	for i := range a.rows {
		ra, rb := &a.rows[i], &b.rows[i]
		if ra.key != rb.key {
			return rep, fmt.Errorf("flip check: row %d is %s v%d as given, %s v%d flipped", i, ra.appointment, ra.version, rb.appointment, rb.version)
		}
		changed := rep.ChangedBefore
		if ra.at.After(cut) {
			rep.RowsAfter++
			changed = rep.ChangedAfter
		} else {
			rep.RowsBefore++
		}
		for j := range ra.v {
			if !same(ra.v[j], rb.v[j]) {
				changed[cols[j]]++
			}
		}
		for j := range ra.extra {
			if !same(ra.extra[j], rb.extra[j]) {
				changed[cols[len(ra.v)+j]]++
			}
		}
	}
	leaked := 0
	for _, c := range cols {
		leaked += rep.ChangedBefore[c]
		after += rep.ChangedAfter[c]
	}
	rep.OK = leaked == 0 && after > 0 && flipped > 0
	return rep, nil
}

// flipCheck replays the input again through again (which must replay exactly what r saw)
// with the outcomes after r's middle booking flipped, and writes the report to path.
func flipCheck(r *replay, again func(*replay) error, path string) (flipReport, error) {
	cut := flipCutOff(r)
	flipped := 0
	b := newReplay()
	b.policy, b.extras, b.codes, b.decisionLead = r.policy, r.extras, r.codes, r.decisionLead
	b.transform = flipOutcomesAfter(cut, &flipped)
	if err := again(b); err != nil {
		return flipReport{}, fmt.Errorf("flip check: %w", err)
	}
	rep, err := compareReplays(r, b, cut, flipped)
	if err != nil {
		return rep, err
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return rep, err
	}
	before, after := 0, 0
	for _, c := range rep.Columns {
		before += rep.ChangedBefore[c]
		after += rep.ChangedAfter[c]
	}
	fmt.Fprintf(os.Stderr, "trainset: flip check: %d outcomes after %s flipped; %d values changed in %d rows booked at or before it (must be 0), %d in %d later rows\n",
		flipped, cut.Format(time.RFC3339), before, rep.RowsBefore, after, rep.RowsAfter)
	return rep, nil
}

// again returns a function that replays o's input (the CSV's imported events, held by r, or
// the JSONL file read again) into another replay.
func again(o options, r *replay) func(*replay) error {
	if o.csv != "" {
		evs := r.csvEvents
		return func(r2 *replay) error {
			for i := range evs {
				if err := r2.apply(context.Background(), &evs[i]); err != nil {
					return err
				}
			}
			return r2.finish(context.Background())
		}
	}
	return func(r2 *replay) error {
		f, err := os.Open(o.in)
		if err != nil {
			return err
		}
		defer f.Close()
		return r2.read(context.Background(), f)
	}
}
