// Command trainset turns a history of appointment events into a training set for
// training/train.py. It replays the events in event-time order through the same feature code
// as the live consumer (featurestore.Compute on the patient's history, read before the event
// is applied), so every row holds exactly what was known when the booking was scored, and
// labels each row with the appointment's eventual outcome.
//
//	trainset -in events.jsonl [-truth truth.csv] [-out trainset.csv] [-extras a,b:categorical] [-summary s.json] [-flip-check f.json]
//	trainset -csv appointments.csv [-bad-rows bad_rows.csv] [-csv-timezone Europe/London] [-csv-date-only-time 23:59]
//	         [-out trainset.csv] [-extras a,b:categorical] [-summary s.json] [-flip-check f.json]
//	trainset -csv appointments.csv -model models/<id> [-extras sensitive:categorical] [-summary s.json] [-out scored.csv]
//	any of these with [-as-of booking|decision] [-decision-lead 24h]
//
// Input is either JSONL, one appointment.v1 event per line (cmd/producer --out writes it),
// sorted by event_time (an unsorted or invalid line is refused with its line number), or a
// historical appointments CSV in the layout of docs/csv.md, read by csvimport. A CSV's bad
// rows are never dropped silently: they are counted by reason on stderr and in the summary,
// and listed (line number and reason, never cell values) in the -bad-rows file. Patient
// identifiers in a CSV are pseudonymised under a random key that lives only in this process:
// the training set carries no patient identity at all, so no trust secret is needed.
//
// The truth file (cmd/producer --truth, CSV appointment_id,booking_version,p_dna) is optional
// and only fills the p_dna column, so a model card can compare the model with the simulator's
// ground truth.
//
// Output is CSV: appointment_id, booking_version, event_time and appointment_start (RFC 3339),
// every featurestore.Names column, then an "extra.<key>" column for each -extras key (the booking's
// booking.extra value, read by scoring.ExtraInput as the scorer's scoring.Model.Vector reads
// it), label (1 did not attend, 0 attended) and p_dna; an empty field is missing.
//
// An -extras entry is key or key:numeric (text cells are missing, as the scorer reads a
// number) or key:categorical. A categorical CSV column with text (F/M, area names) is written
// as category codes: its texts, and the numbers it also holds, sorted, are the code list
// (code i = the i-th), which goes to the -summary JSON as "categories" for train.py to put in
// the contract, so the scorer maps the same text to the same code. A value in fewer than
// -min-category-rows rows (default 10) is left out of the list, and so missing: the list is
// in the model folder, which trusts share. Only the final version of an
// appointment that ended in attended or did-not-attend is a row; superseded, cancelled and
// unfinished bookings are counted on stderr and in the -summary JSON.
//
// -model DIR (training/evaluate.sh, `make evaluate`) evaluates a model trained anywhere on
// this data: the directory is loaded as the scorer loads it (scoring.Load; a model it refuses
// is refused here with the same reason), the model's booking extras, their types and their
// code lists come from its contract (not learned from the data, so the same text has the same
// code as in serving, and text the list lacks is missing), a CSV without a column the model
// needs is refused naming it, and every row gets two more columns after p_dna:
// served_probability and served_band, from scoring.Model.Vector, Score and Band on the
// replayed event and its point-in-time features, exactly as the consumer scores a booking.
// -extras then only adds columns for the subgroup table (a sensitive column the model does not
// use); an -extras key the contract has is taken from the contract.
//
// -as-of decision [-decision-lead 24h] (the decision-time model, docs/model.md) makes each row
// the appointment's latest booking as of its decision point D = start - lead instead of as of
// its booking: the same replay holds each booking version until the clock reaches D, then
// computes featurestore.Compute on a copy of the booking event with EventTime = D and the
// history replayed so far (events before D), as the consumer re-scores it. Rows are in D order
// with event_time = D; an appointment whose latest version was booked at or after its D has no
// row (its decision is made on the booking score) and is counted as booked_after_decision_point.
//
// -flip-check replays the input a second time with every outcome recorded after the middle
// booking flipped and writes, per column, how many rows booked before it changed (must be
// none; see flipcheck.go). train.py refuses to train on a training set that fails it.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/csvimport"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scoring"
)

// options are the command line.
type options struct {
	in, csv, truth, out string
	badRows, summary    string
	flipCheck           string
	extras              []string // -extras entries: key or key:type
	csvOpts             csvimport.Options
	minCategoryRows     int
	policy              featurestore.Policy
	model               string        // -model: a model directory to score every row with
	asOf                string        // -as-of: booking (default) or decision
	decisionLead        time.Duration // -decision-lead: the decision point is this long before the start
}

// The -as-of values: a row's features as of its booking, or as of the decision point.
const (
	asOfBooking  = "booking"
	asOfDecision = "decision"
)

// defaultDecisionLead is -decision-lead's default: the extra-reminder decision is made the
// day before the appointment.
const defaultDecisionLead = 24 * time.Hour

// defaultMinCategoryRows is -min-category-rows' default.
const defaultMinCategoryRows = 10

// errUsage marks a problem with the input files' shape (not their content); exit status 2.
var errUsage = errors.New("usage")

func main() {
	var o options
	flag.StringVar(&o.in, "in", "", "appointment events, JSONL sorted by event_time (- for stdin)")
	flag.StringVar(&o.csv, "csv", "", "historical appointments CSV (docs/csv.md), instead of -in")
	flag.StringVar(&o.truth, "truth", "", "optional truth CSV (appointment_id,booking_version,p_dna)")
	flag.StringVar(&o.out, "out", "-", "training set CSV to write (- for stdout)")
	flag.StringVar(&o.badRows, "bad-rows", "", "with -csv: write every bad row's line number and reason to this CSV")
	flag.StringVar(&o.summary, "summary", "", "write counts (rows, bad rows by reason, rows left out, extras) as JSON to this file")
	flag.StringVar(&o.flipCheck, "flip-check", "", "replay again with the outcomes after the middle booking flipped and write what changed, per column, as JSON to this file")
	extras := flag.String("extras", "", "comma-separated booking extras to add as extra.<key> columns (CSV: extra column names), each key or key:numeric or key:categorical")
	flag.StringVar(&o.csvOpts.TimeZone, "csv-timezone", csvimport.DefaultTimeZone, "with -csv: time zone of the CSV's times without an offset (IANA name)")
	flag.StringVar(&o.csvOpts.DateOnlyTime, "csv-date-only-time", csvimport.DefaultDateOnlyTime, "with -csv: local time of day (HH:MM) given to a date-only appointment_start or cancelled_at")
	flag.IntVar(&o.minCategoryRows, "min-category-rows", defaultMinCategoryRows, "with -csv: a text category's value must be in at least this many rows to enter the code list (rarer values are missing)")
	flag.StringVar(&o.model, "model", "", "a model directory (scoring.Load): take the extras, their types and code lists from its contract, and add served_probability and served_band columns (make evaluate)")
	flag.StringVar(&o.asOf, "as-of", asOfBooking, "booking: one row per appointment as of its (latest) booking; decision: as of the decision point, -decision-lead before the start, with the history replayed up to it (the decision-time model)")
	flag.DurationVar(&o.decisionLead, "decision-lead", defaultDecisionLead, "with -as-of decision: how long before the appointment start the decision point is")
	retention := flag.Duration("history-retention", 3*365*24*time.Hour, "how long facts stay in a patient's history; must equal the consumer's --history-retention or training and serving features differ")
	flag.Parse()
	o.extras = envflag.List(*extras)
	o.policy = featurestore.Policy{Retention: *retention}
	bad := (o.in == "") == (o.csv == "") || flag.NArg() > 0 || *retention < 24*time.Hour
	bad = bad || o.badRows != "" && o.csv == "" || o.truth != "" && o.csv != "" || o.flipCheck != "" && o.in == "-"
	bad = bad || o.asOf != asOfBooking && o.asOf != asOfDecision || o.decisionLead <= 0
	if bad {
		fmt.Fprintln(os.Stderr, "trainset: give exactly one of -in (JSONL events) or -csv (appointments CSV); -bad-rows needs -csv; -truth needs -in (a CSV has no ground truth); -flip-check reads the input twice, so not from stdin; -as-of is booking or decision; -decision-lead must be positive")
		flag.Usage()
		os.Exit(2)
	}
	if err := o.csvOpts.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "trainset: -csv-timezone / -csv-date-only-time:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "trainset:", err)
		if errors.Is(err, errUsage) || errors.Is(err, csvimport.ErrHeader) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// extraKeyRE: extra keys become LightGBM feature names ("extra.<key>"), which must not hold
// JSON punctuation or spaces; csvimport lower-cases column names.
var extraKeyRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// parseExtras splits -extras entries into keys and the set declared categorical, naming
// every bad entry in one error.
func parseExtras(entries []string) (keys []string, categorical map[string]bool, err error) {
	categorical = map[string]bool{}
	var badKeys, badTypes []string
	for _, e := range entries {
		k, typ, _ := strings.Cut(e, ":")
		if !extraKeyRE.MatchString(k) {
			badKeys = append(badKeys, strconv.Quote(k))
		}
		switch typ {
		case "", string(scoring.Numeric):
		case string(scoring.Categorical):
			categorical[k] = true
		default:
			badTypes = append(badTypes, strconv.Quote(e))
		}
		keys = append(keys, k)
	}
	var problems []string
	if len(badKeys) > 0 {
		problems = append(problems, fmt.Sprintf("extras %s: want 1-64 of a-z 0-9 _ (csvimport lower-cases CSV column names)", strings.Join(badKeys, ", ")))
	}
	if len(badTypes) > 0 {
		problems = append(problems, fmt.Sprintf("extras %s: the type after the colon must be numeric or categorical", strings.Join(badTypes, ", ")))
	}
	if dup := duplicates(keys); len(dup) > 0 {
		problems = append(problems, "extras listed twice: "+strings.Join(dup, ", "))
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("%w: %s", errUsage, strings.Join(problems, "; "))
	}
	return keys, categorical, nil
}

func run(o options) error {
	keys, categorical, err := parseExtras(o.extras)
	if err != nil {
		return err
	}
	switch {
	case o.minCategoryRows == 0:
		o.minCategoryRows = defaultMinCategoryRows
	case o.minCategoryRows < 0:
		return fmt.Errorf("%w: -min-category-rows %d: want at least 1", errUsage, o.minCategoryRows)
	}
	var model *scoring.Model
	var fixed map[string]*scoring.CodeList // extras whose code list (maybe none) the model's contract fixes
	if o.model != "" {
		if model, err = scoring.Load(o.model); err != nil {
			return fmt.Errorf("%w: -model: the scorer refuses this model, so it cannot be evaluated: %v", errUsage, err)
		}
		keys, fixed = modelExtras(model.Contract(), keys, categorical)
	}
	o.extras = keys
	inPath, truthPath, outPath := o.in, o.truth, o.out
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
	r := newReplay()
	r.policy = o.policy
	r.extras = o.extras
	if o.asOf == asOfDecision {
		if o.decisionLead <= 0 {
			return fmt.Errorf("%w: -decision-lead %s: want a positive duration", errUsage, o.decisionLead)
		}
		r.decisionLead = o.decisionLead
	} else if o.asOf != "" && o.asOf != asOfBooking {
		return fmt.Errorf("%w: -as-of %q: want %s or %s", errUsage, o.asOf, asOfBooking, asOfDecision)
	}
	r.codes = make([]*scoring.CodeList, len(o.extras))
	sum := summary{Extras: o.extras, AgeBands: events.AgeBands, AsOf: asOfBooking}
	if r.decisionLead > 0 {
		sum.AsOf, sum.DecisionLeadHours = asOfDecision, r.decisionLead.Hours()
	}
	if model != nil {
		r.model = model
		sum.ModelID = model.ID()
		for i, k := range o.extras {
			if codes, ok := fixed[k]; ok && codes != nil {
				r.codes[i] = codes
				if sum.Categories == nil {
					sum.Categories = map[string][]string{}
				}
				sum.Categories[k] = contractCategories(model.Contract(), k)
			}
		}
	}
	if o.csv != "" {
		sum.Source = "csv"
		if err := r.readCSV(context.Background(), o, categorical, fixed, &sum); err != nil {
			return err
		}
	} else {
		sum.Source = "jsonl"
		in := io.Reader(os.Stdin)
		if inPath != "-" {
			f, err := os.Open(inPath)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		if err := r.read(context.Background(), in); err != nil {
			return fmt.Errorf("%s: %w", inPath, err)
		}
		var never []string
		for _, k := range o.extras {
			if !r.extraSeen[k] {
				never = append(never, k)
			}
		}
		if len(never) > 0 {
			return fmt.Errorf("%w: %s: no booking carries the extras %s in booking.extra", errUsage, inPath, strings.Join(never, ", "))
		}
		var text []string
		for _, k := range o.extras {
			if _, ok := fixed[k]; categorical[k] && r.textCells[k] > 0 && !ok {
				text = append(text, k)
			}
		}
		if len(text) > 0 {
			return fmt.Errorf("%w: %s: the categorical extras %s carry text (scoring.TextCode), whose words are not in the events: build the training set from the CSV (-csv) so the code list can be learned", errUsage, inPath, strings.Join(text, ", "))
		}
	}
	var learned []string
	for k := range sum.Categories {
		if _, ok := fixed[k]; !ok {
			learned = append(learned, k)
		}
	}
	if len(learned) > 0 && o.summary == "" {
		return fmt.Errorf("%w: the extras %s hold text categories; their code lists go to the -summary file, which train.py copies into the contract: give -summary", errUsage, strings.Join(slices.Sorted(slices.Values(learned)), ", "))
	}
	if o.flipCheck != "" {
		if _, err := flipCheck(r, again(o, r), o.flipCheck); err != nil {
			return err
		}
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
	what := "bookings scored"
	if r.decisionLead > 0 {
		what = fmt.Sprintf("bookings scored as of their decision point (start - %s)", r.decisionLead)
	}
	fmt.Fprintf(os.Stderr, "trainset: %d events, %d patients, %d %s: %d training rows (%d did not attend, %d attended); left out %d superseded by a reschedule, %d cancelled, %d without an outcome, %d duplicate bookings, %d booked after their decision point; %d rows without p_dna\n",
		s.events, r.store.Len(), s.scored, what, n, s.dna, s.attended, s.superseded, s.cancelled, s.noOutcome, s.duplicates, s.lateBooked, s.noTruth)
	for _, k := range o.extras {
		if c := sum.Categories[k]; c != nil {
			shown := strings.Join(c[:min(len(c), 8)], ", ")
			if len(c) > 8 {
				shown += ", …"
			}
			fmt.Fprintf(os.Stderr, "trainset: extra %s: text categories, %d codes (%s)\n", k, len(c), shown)
		}
		if n := r.textCells[k]; n > 0 && !categorical[k] {
			fmt.Fprintf(os.Stderr, "trainset: extra %s is numeric: its %d text cells are missing values (declare it %s:categorical if they are categories)\n", k, n, k)
		}
	}
	if o.summary != "" {
		sum.Events, sum.Patients, sum.BookingsScored, sum.TrainingRows = s.events, r.store.Len(), s.scored, n
		sum.DidNotAttend, sum.Attended, sum.WithoutTruth = s.dna, s.attended, s.noTruth
		sum.LeftOut = map[string]int{"superseded_by_reschedule": s.superseded, "cancelled": s.cancelled, "no_outcome": s.noOutcome, "duplicate_booking": s.duplicates}
		if r.decisionLead > 0 {
			sum.LeftOut["booked_after_decision_point"] = s.lateBooked
		}
		sum.HistoryRetentionHours = int(o.policy.Retention / time.Hour)
		for _, k := range o.extras {
			if n := r.textCells[k]; n > 0 && !categorical[k] {
				if sum.TextAsMissing == nil {
					sum.TextAsMissing = map[string]int{}
				}
				sum.TextAsMissing[k] = n
			}
		}
		if o.csv != "" {
			sum.TimeZone, sum.DateOnlyTime = cmp.Or(o.csvOpts.TimeZone, csvimport.DefaultTimeZone), cmp.Or(o.csvOpts.DateOnlyTime, csvimport.DefaultDateOnlyTime)
		}
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(o.summary, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// summary is the -summary JSON: where the rows came from and what was left out, for the
// model card.
type summary struct {
	Source                string         `json:"source"` // csv or jsonl
	CSV                   *csvSummary    `json:"csv,omitempty"`
	Events                int            `json:"events"`
	Patients              int            `json:"patients"`
	BookingsScored        int            `json:"bookings_scored"`
	TrainingRows          int            `json:"training_rows"`
	DidNotAttend          int            `json:"did_not_attend"`
	Attended              int            `json:"attended"`
	WithoutTruth          int            `json:"rows_without_p_dna"`
	LeftOut               map[string]int `json:"left_out"`
	Extras                []string       `json:"extras"`
	HistoryRetentionHours int            `json:"history_retention_hours"`
	// Categories holds, per categorical extra with text, its code list (code i = the i-th
	// text); train.py writes it into the contract's feature as "categories".
	Categories map[string][]string `json:"categories,omitempty"`
	// RareCategories counts, per categorical extra, the values left out of its code list
	// for being in fewer than -min-category-rows rows.
	RareCategories map[string]int `json:"rare_categories,omitempty"`
	// TextAsMissing counts, per numeric extra, the bookings scored whose value was text, read
	// as missing.
	TextAsMissing map[string]int `json:"text_as_missing,omitempty"`
	// TimeZone and DateOnlyTime are the CSV reading settings (-csv only).
	TimeZone     string `json:"time_zone,omitempty"`
	DateOnlyTime string `json:"date_only_time,omitempty"`
	// AgeBands names the age_band feature's codes (0, 1, ...), for the card's subgroups.
	AgeBands []string `json:"age_bands"`
	// ModelID is the -model directory's model (its extras and code lists were used).
	ModelID string `json:"model_id,omitempty"`
	// AsOf is "booking" (each row as of its booking) or "decision" (as of the decision
	// point, DecisionLeadHours before the appointment start).
	AsOf              string  `json:"as_of"`
	DecisionLeadHours float64 `json:"decision_lead_hours,omitempty"`
}

// modelExtras puts the booking extras of a model's contract first, with their types, then the
// -extras keys the contract does not have; fixed holds, per contract extra, its code list
// (nil for a categorical carried as whole-number codes, or a numeric one): never learned from
// the data, so the data is read as the scorer reads it.
func modelExtras(c scoring.Contract, keys []string, categorical map[string]bool) ([]string, map[string]*scoring.CodeList) {
	fixed := map[string]*scoring.CodeList{}
	var out []string
	for _, f := range c.Features {
		k, ok := strings.CutPrefix(f.Name, scoring.ExtraPrefix)
		if !ok {
			continue
		}
		out = append(out, k)
		categorical[k] = f.Type == scoring.Categorical
		fixed[k] = nil
		if f.Categories != nil {
			fixed[k], _ = scoring.NewCodeList(f.Categories) // scoring.Load checked it
		}
	}
	for _, k := range keys {
		if _, ok := fixed[k]; !ok {
			out = append(out, k)
		}
	}
	return out, fixed
}

// contractCategories is the code list of extra k in contract c.
func contractCategories(c scoring.Contract, k string) []string {
	for _, f := range c.Features {
		if f.Name == scoring.ExtraPrefix+k {
			return f.Categories
		}
	}
	return nil
}

type csvSummary struct {
	Rows     int `json:"rows"`
	Imported int `json:"imported"`
	Bad      int `json:"bad"`
	// BadReasons counts bad rows by reason; the -bad-rows file lists them by line.
	BadReasons map[string]int `json:"bad_reasons"`
	// UnusedExtraColumns are extra columns in the file that -extras did not ask for.
	UnusedExtraColumns []string `json:"unused_extra_columns"`
}

func duplicates(xs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range xs {
		if seen[x] && !slices.Contains(out, x) {
			out = append(out, x)
		}
		seen[x] = true
	}
	return out
}

// standardColumns are the csvimport columns with a meaning; any other column is an extra.
var standardColumns = append(slices.Clone(csvimport.Required), csvimport.ColSpecialty, csvimport.ColClinic,
	csvimport.ColFirstVisit, csvimport.ColAgeBand, csvimport.ColAge, csvimport.ColDeprivation, csvimport.ColSMS,
	csvimport.ColCancelledAt)

// csvExtraColumns returns the extra (non-standard) column names of a CSV header, as
// csvimport names them.
func csvExtraColumns(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head, err := csv.NewReader(bufio.NewReader(f)).Read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: header: %v", csvimport.ErrHeader, path, err)
	}
	var out []string
	for _, h := range head {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if name != "" && !slices.Contains(standardColumns, name) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// readCSV imports a historical appointments CSV and replays its events. Header problems,
// and extras the header does not have, are one error naming all of them.
func (r *replay) readCSV(ctx context.Context, o options, categorical map[string]bool, fixed map[string]*scoring.CodeList, sum *summary) error {
	available, err := csvExtraColumns(o.csv)
	if err != nil {
		return err
	}
	var missing, needed, standard []string
	for _, k := range o.extras {
		_, modelNeeds := fixed[k]
		switch {
		case slices.Contains(standardColumns, k):
			standard = append(standard, k)
		case !slices.Contains(available, k) && modelNeeds:
			needed = append(needed, k)
		case !slices.Contains(available, k):
			missing = append(missing, k)
		}
	}
	f, err := os.Open(o.csv)
	if err != nil {
		return err
	}
	defer f.Close()
	// The training set holds no patient identity, so the pseudonyms only need to group one
	// patient's rows within this run: a random key, never stored, is enough.
	key := make([]byte, pseudo.MinSecretBytes)
	rand.Read(key)
	ps, err := pseudo.New(key)
	if err != nil {
		return err
	}
	res, err := csvimport.Import(bufio.NewReaderSize(f, 1<<20), ps, o.csvOpts)
	if err != nil || len(missing) > 0 || len(standard) > 0 || len(needed) > 0 {
		var problems []string
		if err != nil {
			problems = append(problems, strings.TrimPrefix(err.Error(), csvimport.ErrHeader.Error()+": "))
		}
		if len(needed) > 0 {
			problems = append(problems, fmt.Sprintf("the model %s needs the column(s) %s, which the file does not have (its extra columns: %s)", r.model.ID(), strings.Join(needed, ", "), listOrNone(available)))
		}
		if len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("extras %s are not columns of the file (its extra columns: %s)", strings.Join(missing, ", "), listOrNone(available)))
		}
		if len(standard) > 0 {
			problems = append(problems, fmt.Sprintf("%s are standard columns with their own features, not extras", strings.Join(standard, ", ")))
		}
		if err != nil && !errors.Is(err, csvimport.ErrHeader) {
			return fmt.Errorf("%s: %s", o.csv, strings.Join(problems, "; "))
		}
		return fmt.Errorf("%w: %s: %s", csvimport.ErrHeader, o.csv, strings.Join(problems, "; "))
	}
	cs := &csvSummary{Rows: res.Rows, Imported: res.Imported, Bad: len(res.Bad), BadReasons: map[string]int{}}
	for _, c := range available {
		if !slices.Contains(o.extras, c) {
			cs.UnusedExtraColumns = append(cs.UnusedExtraColumns, c)
		}
	}
	for _, b := range res.Bad {
		cs.BadReasons[b.Reason]++
	}
	sum.CSV = cs
	if o.badRows != "" {
		if err := writeBadRows(o.badRows, res.Bad); err != nil {
			return err
		}
	}
	reportBad(os.Stderr, o, cs, res.Bad)
	if res.Imported == 0 {
		return fmt.Errorf("%s: none of its %d rows could be imported", o.csv, res.Rows)
	}
	for i, k := range o.extras {
		if _, ok := fixed[k]; ok || !categorical[k] || len(res.Texts[k]) == 0 {
			continue
		}
		list, rare := codeTexts(res, k, o.minCategoryRows)
		if rare > 0 {
			if sum.RareCategories == nil {
				sum.RareCategories = map[string]int{}
			}
			sum.RareCategories[k] = rare
			fmt.Fprintf(os.Stderr, "trainset: extra %s: %d values in fewer than %d rows each are left out of its code list (missing to the model)\n", k, rare, o.minCategoryRows)
		}
		if len(list) == 0 {
			continue
		}
		codes, err := scoring.NewCodeList(list)
		if err != nil {
			return fmt.Errorf("%s: extra column %s: %v", o.csv, k, err)
		}
		r.codes[i] = codes
		if sum.Categories == nil {
			sum.Categories = map[string][]string{}
		}
		sum.Categories[k] = list
	}
	r.csvEvents = res.Events // for the flip check's second replay
	for i := range res.Events {
		if err := r.apply(ctx, &res.Events[i]); err != nil {
			return err
		}
	}
	return r.finish(ctx)
}

// codeTexts is the code list of extra column k: its texts, and the numbers it also holds
// written as text, sorted; each in at least minRows imported rows. The list goes into the
// model's contract, and a model folder is shared: a value fewer rows hold (a rare place, a
// mistyped name) could point at a patient, so it is left out (missing) and counted in rare.
func codeTexts(res csvimport.Result, k string, minRows int) (list []string, rare int) {
	text := map[float64]string{}
	for _, t := range res.Texts[k] {
		text[scoring.TextCode(t)] = t
	}
	rows := map[string]int{}
	for i := range res.Events {
		if b := res.Events[i].Booking; b != nil && res.Events[i].Type == events.Booked {
			v, ok := b.Extra[k]
			switch {
			case !ok:
			case scoring.IsTextCode(v):
				rows[text[v]]++
			default:
				rows[strconv.FormatFloat(v, 'g', -1, 64)]++
			}
		}
	}
	for t, n := range rows {
		if n >= minRows {
			list = append(list, t)
		} else {
			rare++
		}
	}
	slices.Sort(list)
	return list, rare
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// reportBad prints the bad-row counts by reason and the first few rows to w.
func reportBad(w io.Writer, o options, cs *csvSummary, bad []csvimport.RowError) {
	fmt.Fprintf(w, "trainset: %s: %d rows, %d imported, %d bad", o.csv, cs.Rows, cs.Imported, cs.Bad)
	if o.badRows != "" && cs.Bad > 0 {
		fmt.Fprintf(w, " (each listed with its line number and reason in %s)", filepath.Base(o.badRows))
	}
	fmt.Fprintln(w)
	reasons := slices.SortedFunc(maps.Keys(cs.BadReasons), func(a, b string) int { return cs.BadReasons[b] - cs.BadReasons[a] })
	for _, r := range reasons {
		fmt.Fprintf(w, "trainset:   %6d × %s\n", cs.BadReasons[r], r)
	}
	const show = 10
	for i, b := range bad {
		if i == show {
			fmt.Fprintf(w, "trainset:   ... and %d more bad rows\n", len(bad)-show)
			break
		}
		fmt.Fprintf(w, "trainset:   line %d: %s\n", b.Line, b.Reason)
	}
	if len(cs.UnusedExtraColumns) > 0 {
		fmt.Fprintf(w, "trainset: extra columns not used as features (add them to the training config's \"extras\" to use them): %s\n", strings.Join(cs.UnusedExtraColumns, ", "))
	}
}

func writeBadRows(path string, bad []csvimport.RowError) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	cw.Write([]string{"line", "reason"})
	for _, b := range bad {
		cw.Write([]string{strconv.Itoa(b.Line), b.Reason})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type key struct {
	appointment string
	version     int
}

// row is one scored booking: its features as the live consumer would have computed them.
type row struct {
	key
	at    time.Time // as of: the booking's event time, or its decision point
	start time.Time // the appointment's start (this version's)
	seq   int       // position in the stream
	v     featurestore.Vector
	extra []float64 // the -extras values, NaN when the booking does not carry one
	p     float64   // -model: the served probability
	band  string    // -model: the served band
}

// fate is what became of an appointment by the end of the stream.
type fate struct {
	latest     int  // highest booking version seen
	late       bool // -as-of decision: the latest version was booked at or after its decision point
	cancelled  bool
	outcome    events.Type // latest outcome event, "" if none
	outcomeSeq int
}

type stats struct {
	events, scored, duplicates            int
	superseded, cancelled, noOutcome, dna int
	attended, noTruth                     int
	lateBooked                            int // -as-of decision: final versions booked after their decision point, with an outcome
}

// replay holds the state of one pass over the events. Histories live in a MemoryStore and
// go through Load, Compute, Apply, Save exactly as in the live consumer.
type replay struct {
	store     featurestore.MemoryStore
	policy    featurestore.Policy
	extras    []string // booking extras written as extra.<key> columns
	codes     []*scoring.CodeList
	model     *scoring.Model  // -model: scores every row as the consumer would
	x         []float64       // the model input, reused
	extraSeen map[string]bool // extras some booking carried
	textCells map[string]int  // extras' scored bookings carrying text (scoring.TextCode)
	// transform, if set, rewrites a copy of each event before it is replayed (the flip check).
	transform func(*events.Appointment)
	csvEvents []events.Appointment // a CSV's events, as imported
	rows      []row
	// decisionLead > 0 (-as-of decision) makes the rows as of each booking's decision point,
	// start - decisionLead: a booking waits in pending until the replay's clock reaches it.
	decisionLead time.Duration
	pending      []decisionPoint // a min-heap on (at, seq)
	seen         map[key]bool
	fates        map[string]*fate
	stats        stats
}

func newReplay() *replay {
	return &replay{seen: map[key]bool{}, fates: map[string]*fate{}, extraSeen: map[string]bool{}, textCells: map[string]int{}}
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
	return r.finish(ctx)
}

// apply scores ev if it is a booking (features from the history before ev), then records ev
// in the patient's history, as the live consumer does.
func (r *replay) apply(ctx context.Context, ev *events.Appointment) error {
	if r.transform != nil {
		c := *ev
		r.transform(&c)
		ev = &c
	}
	// Decision points the clock has now reached are scored on the history before ev.
	if err := r.decide(ctx, ev.EventTime); err != nil {
		return err
	}
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
		if ev.Version >= f.latest {
			f.late = false
		}
		f.latest = max(f.latest, ev.Version)
		if r.decisionLead > 0 {
			d := ev.Booking.Start.Add(-r.decisionLead)
			if !d.After(ev.EventTime) {
				// Booked at or after its decision point: the decision is made on the booking
				// score, so there is no decision-time row.
				f.late = ev.Version >= f.latest
				break
			}
			r.push(decisionPoint{at: d, seq: seq, ev: *ev})
			break
		}
		r.rows = append(r.rows, r.score(ev, h, seq))
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

// score computes the row of booking event ev (its EventTime the as-of time) from the
// patient's history h, holding only what was recorded before it.
func (r *replay) score(ev *events.Appointment, h *featurestore.History, seq int) row {
	r.stats.scored++
	rw := row{key: key{ev.AppointmentID, ev.Version}, at: ev.EventTime, start: ev.Booking.Start, seq: seq, v: featurestore.Compute(ev, h)}
	if len(r.extras) > 0 {
		// The scorer's own reading of booking extras (scoring.ExtraInput, as
		// scoring.Model.Vector reads them), so training and serving cannot differ.
		rw.extra = make([]float64, len(r.extras))
		for i, k := range r.extras {
			var codes *scoring.CodeList
			if i < len(r.codes) {
				codes = r.codes[i]
			}
			raw := scoring.ExtraValue(ev, k)
			rw.extra[i] = scoring.ExtraInput(ev, k, codes)
			if !math.IsNaN(raw) {
				r.extraSeen[k] = true
			}
			if scoring.IsTextCode(raw) {
				r.textCells[k]++
			}
		}
	}
	if r.model != nil {
		// The consumer's own path (scorer/processor.go): Vector on the event and its
		// point-in-time features, then Score (trees and calibration) and Band.
		r.x = r.model.Vector(ev, rw.v, r.x)
		rw.p = r.model.Score(r.x)
		rw.band = r.model.Band(rw.p)
	}
	return rw
}

// decisionPoint is a booking version waiting for its decision point (-as-of decision).
type decisionPoint struct {
	at  time.Time // start - decision lead
	seq int       // the booking event's position in the stream
	ev  events.Appointment
}

func (a decisionPoint) before(b decisionPoint) bool {
	return a.at.Before(b.at) || a.at.Equal(b.at) && a.seq < b.seq
}

func (r *replay) push(d decisionPoint) {
	h := append(r.pending, d)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	r.pending = h
}

func (r *replay) pop() decisionPoint {
	h := r.pending
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		m, l := i, 2*i+1
		if l < len(h) && h[l].before(h[m]) {
			m = l
		}
		if l+1 < len(h) && h[l+1].before(h[m]) {
			m = l + 1
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	r.pending = h
	return top
}

// decide scores, in decision-point order, every waiting booking version whose decision point
// is at or before now, on a copy of its booking event stamped with the decision point and the
// patient's history as replayed so far: only events before now, so before the point (facts
// stamped in its own second are left out by featurestore.Compute). A version superseded or
// cancelled meanwhile is still scored; label leaves it out as it does at booking time.
func (r *replay) decide(ctx context.Context, now time.Time) error {
	for len(r.pending) > 0 && !r.pending[0].at.After(now) {
		d := r.pop()
		hs, err := r.store.Load(ctx, []string{d.ev.Patient})
		if err != nil {
			return err
		}
		ev := d.ev
		ev.EventTime = d.at
		r.rows = append(r.rows, r.score(&ev, hs[ev.Patient], d.seq))
	}
	return nil
}

// finish scores the decision points the stream ended before (their appointments have no
// outcome yet, so they are counted, not written).
func (r *replay) finish(ctx context.Context) error {
	for len(r.pending) > 0 {
		if err := r.decide(ctx, r.pending[0].at); err != nil {
			return err
		}
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
	if r.decisionLead > 0 {
		for _, f := range r.fates {
			if f.late && !f.cancelled && f.outcome != "" {
				r.stats.lateBooked++
			}
		}
	}
	cw := csv.NewWriter(w)
	header := append([]string{"appointment_id", "booking_version", "event_time", "appointment_start"}, featurestore.Names...)
	for _, k := range r.extras {
		header = append(header, scoring.ExtraPrefix+k)
	}
	header = append(header, "label", "p_dna")
	if r.model != nil {
		header = append(header, "served_probability", "served_band")
	}
	if err := cw.Write(header); err != nil {
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
		rec = append(rec[:0], rw.appointment, strconv.Itoa(rw.version), rw.at.UTC().Format(time.RFC3339Nano), rw.start.UTC().Format(time.RFC3339Nano))
		for _, x := range rw.v {
			rec = append(rec, formatFloat(x))
		}
		for _, x := range rw.extra {
			rec = append(rec, formatFloat(x))
		}
		rec = append(rec, strconv.Itoa(label))
		if p, ok := pdna[rw.key]; ok {
			rec = append(rec, strconv.FormatFloat(p, 'g', -1, 64))
		} else {
			rec = append(rec, "")
			r.stats.noTruth++
		}
		if r.model != nil {
			rec = append(rec, strconv.FormatFloat(rw.p, 'g', -1, 64), rw.band)
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
