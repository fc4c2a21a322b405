package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/stream"
)

// report is out/chaos.json.
type report struct {
	OK        bool    `json:"ok"`
	Profile   string  `json:"profile"`
	DurationS float64 `json:"duration_s"`
	// Phases: setup (services, build), prepare (input, ground truth, contacts), produce
	// (phase 1 with its faults), drain, sweep (phase 2), verify.
	Phases map[string]float64 `json:"phases"`

	Input struct {
		Events    int            `json:"events"` // valid appointment events published
		ByType    map[string]int `json:"by_type"`
		Malformed int            `json:"malformed"`
		Patients  int            `json:"patients"`
		// Messages on the appointments topic: events plus malformed plus the events a
		// producer retry wrote twice (a batch cut short by the broker restart is written
		// again in full; the scorers must count each event once).
		Messages   int64 `json:"messages"`
		Duplicates int64 `json:"duplicated_by_producer_retries"`
	} `json:"input"`

	// Lost: appointments whose latest booking version has no risk event.
	Lost int `json:"lost"`
	Risk struct {
		Appointments   int `json:"appointments"`    // with a latest version the scorer must score
		ScoredVersions int `json:"scored_versions"` // distinct (appointment, version) risk events
		Expected       int `json:"expected"`        // booking versions the ground truth scores
		Missing        int `json:"missing"`         // of those, without a risk event
		Messages       int `json:"messages"`        // risk events on the topic
		Redelivered    int `json:"redelivered"`     // duplicates (at-least-once; readers deduplicate)
		Unexpected     int `json:"unexpected"`      // for a version the ground truth does not score
		Mismatch       int `json:"mismatch"`        // probability or band differs from the ground truth
	} `json:"risk"`

	// DoubleCounted: history facts in Redis beyond the ground truth (a replayed event
	// counted twice, or an event that should not be there).
	DoubleCounted int `json:"double_counted"`
	History       struct {
		Patients         int `json:"patients"`
		MissingFacts     int `json:"missing_facts"`
		MismatchPatients int `json:"mismatch_patients"`
		Unexpected       int `json:"unexpected_histories"` // history keys of patients not in the input
	} `json:"history"`

	// Monitor: the model monitor's joined outcomes in Redis against the input's outcomes.
	Monitor struct {
		Outcomes      int `json:"outcomes"`       // appointments with an outcome and a scored version
		Joined        int `json:"joined"`         // outcome records the monitor holds
		Missing       int `json:"missing"`        // outcomes it does not hold
		DoubleCounted int `json:"double_counted"` // records beyond one per outcome
		Mismatch      int `json:"mismatch"`       // outcome or served probability differs
	} `json:"monitor"`

	DuplicateSMS int `json:"duplicate_sms"`
	MissingSMS   int `json:"missing_sms"`
	Reminders    struct {
		Due           int `json:"due"`        // reminders the policy wants, from the ground truth
		Sent          int `json:"sent"`       // distinct references Notify accepted
		Messages      int `json:"messages"`   // messages Notify accepted
		Unexpected    int `json:"unexpected"` // references not in the ground truth
		WrongTemplate int `json:"wrong_template"`
		FailedEvents  int `json:"failed_events"` // on the failed-reminders topic
	} `json:"reminders"`

	DeadLetter struct {
		Injected    int            `json:"injected"`
		Found       int            `json:"found"` // distinct injected messages dead-lettered
		Messages    int            `json:"messages"`
		Redelivered int            `json:"redelivered"`
		Missing     int            `json:"missing"`
		Unexpected  int            `json:"unexpected"`
		WrongReason int            `json:"wrong_reason"`
		WrongBytes  int            `json:"wrong_bytes"`
		ByKind      map[string]int `json:"by_kind"`
	} `json:"dead_letter"`

	Faults      []fault            `json:"faults"`
	FaultCounts map[string]int     `json:"fault_counts"`
	PeakRSSMB   map[string]float64 `json:"peak_rss_mb"`
	Violations  []string           `json:"violations"`
}

func (rep *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// verify reads every output — the risk and dead-letter topics, the histories in Redis,
// the messages Notify accepted, the failed-reminders topic — and compares them with the
// ground truth.
func (r *runner) verify(ctx context.Context, gt *truth, nf *faultyNotify, valid int) (*report, error) {
	rep := &report{Profile: r.cfg.profile, Phases: r.phases, FaultCounts: map[string]int{}}
	rep.Input.Events = valid
	rep.Input.ByType = gt.byType
	rep.Input.Patients = len(gt.histories)
	if err := r.verifyRisk(ctx, rep, gt); err != nil {
		return nil, err
	}
	if err := r.verifyHistories(ctx, rep, gt); err != nil {
		return nil, err
	}
	if err := r.verifyMonitor(ctx, rep, gt); err != nil {
		return nil, err
	}
	if err := r.verifyReminders(ctx, rep, gt, nf); err != nil {
		return nil, err
	}
	if err := r.verifyDeadLetters(ctx, rep, valid); err != nil {
		return nil, err
	}
	violations := r.collectFaults(rep, nf)
	rep.Violations = r.judge(rep, violations)
	rep.OK = len(rep.Violations) == 0
	slices.SortStableFunc(rep.Faults, func(a, b fault) int {
		if a.Phase != b.Phase {
			return strings.Compare(phaseOrder(a.Phase), phaseOrder(b.Phase))
		}
		return 0
	})
	return rep, nil
}

// verifyRisk: every latest booking version scored, every score as the ground truth's.
func (r *runner) verifyRisk(ctx context.Context, rep *report, gt *truth) error {
	riskMsgs, err := stream.ReadAll(ctx, r.svc.brokers(), topicRisk)
	if err != nil {
		return fmt.Errorf("read risk topic: %w", err)
	}
	rep.Risk.Messages = len(riskMsgs)
	seen := map[riskKey]int{}
	for _, m := range riskMsgs {
		var ev events.Risk
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			rep.Risk.Unexpected++
			continue
		}
		k := riskKey{ev.AppointmentID, ev.Version}
		seen[k]++
		want, ok := gt.risk[k]
		switch {
		case !ok:
			rep.Risk.Unexpected++
		case want.patient != ev.Patient || want.band != ev.Band || math.Abs(want.probability-ev.Probability) > 1e-12:
			rep.Risk.Mismatch++
		}
	}
	rep.Risk.ScoredVersions = len(seen)
	for _, n := range seen {
		rep.Risk.Redelivered += n - 1
	}
	rep.Risk.Expected = len(gt.risk)
	for k := range gt.risk {
		if seen[k] == 0 {
			rep.Risk.Missing++
		}
	}
	for _, k := range gt.latest {
		if _, scorable := gt.risk[k]; !scorable {
			continue
		}
		rep.Risk.Appointments++
		if seen[k] == 0 {
			rep.Lost++
		}
	}
	return nil
}

// monitorPrefix is cmd/monitor's default Redis key prefix.
const monitorPrefix = monitor.DefaultPrefix

// verifyMonitor: the monitor must hold every outcome whose appointment was scored exactly
// once, with the outcome the input gives and the probability the scorer served for the
// appointment's latest scored version (the chaos scorers do not re-score).
func (r *runner) verifyMonitor(ctx context.Context, rep *report, gt *truth) error {
	served := map[string]riskKey{}
	for k := range gt.risk {
		if cur, ok := served[k.appt]; !ok || k.version > cur.version {
			served[k.appt] = k
		}
	}
	want := map[string]string{} // monitor member → appointment
	for appt, o := range gt.outcomes {
		if _, ok := served[appt]; ok {
			want[o.patient[:16]+":"+appt] = appt
		}
	}
	rep.Monitor.Outcomes = len(want)
	days, err := r.rdb.ZRange(ctx, monitorPrefix+"days", 0, -1).Result()
	if err != nil {
		return fmt.Errorf("read the monitor's days: %w", err)
	}
	seen := map[string]int{}
	for _, day := range days {
		recs, err := r.rdb.HGetAll(ctx, monitorPrefix+"outcomes:"+day).Result()
		if err != nil {
			return fmt.Errorf("read the monitor's outcomes of %s: %w", day, err)
		}
		for member, v := range recs {
			rep.Monitor.Joined++
			seen[member]++
			appt, ok := want[member]
			var j monitor.Joined
			if !ok || json.Unmarshal([]byte(v), &j) != nil {
				rep.Monitor.Mismatch++
				continue
			}
			if j.DNA != gt.outcomes[appt].dna || math.Abs(j.P-gt.risk[served[appt]].probability) > 1e-12 {
				rep.Monitor.Mismatch++
			}
		}
	}
	for _, n := range seen {
		rep.Monitor.DoubleCounted += n - 1
	}
	for member := range want {
		if seen[member] == 0 {
			rep.Monitor.Missing++
		}
	}
	return nil
}

// verifyHistories: Redis must hold exactly the facts the input implies, each once.
func (r *runner) verifyHistories(ctx context.Context, rep *report, gt *truth) error {
	store := featurestore.NewRedisStore(r.rdb, featurestore.RedisOptions{Prefix: redisPrefix})
	patients := make([]string, 0, len(gt.histories))
	for p := range gt.histories {
		patients = append(patients, p)
	}
	sort.Strings(patients)
	for i := 0; i < len(patients); i += 1000 {
		chunk := patients[i:min(i+1000, len(patients))]
		got, err := store.Load(ctx, chunk)
		if err != nil {
			return fmt.Errorf("load histories: %w", err)
		}
		for _, p := range chunk {
			extra, missing := diffFacts(got[p].Facts, gt.histories[p].Facts)
			rep.DoubleCounted += extra
			rep.History.MissingFacts += missing
			if extra+missing > 0 {
				rep.History.MismatchPatients++
			}
		}
	}
	var keys int
	iter := r.rdb.Scan(ctx, 0, redisPrefix+"{*}:history", 5000).Iterator()
	for iter.Next(ctx) {
		keys++
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan histories: %w", err)
	}
	rep.History.Patients = keys
	rep.History.Unexpected = max(0, keys-len(gt.histories))
	return nil
}

// verifyReminders: every due one sent exactly once, nothing else sent.
func (r *runner) verifyReminders(ctx context.Context, rep *report, gt *truth, nf *faultyNotify) error {
	rep.Reminders.Due = len(gt.reminders)
	// A message Notify would still create late counts too: run those timers out first.
	nf.timers.Advance(time.Now().AddDate(100, 0, 0))
	byRef := map[string]int{}
	for _, m := range nf.stub.Messages() {
		byRef[m.Reference]++
		rep.Reminders.Messages++
		want, ok := gt.reminders[m.Reference]
		switch {
		case !ok:
			rep.Reminders.Unexpected++
		case (want.kind == "extra") != (m.TemplateID == extraTemplate):
			rep.Reminders.WrongTemplate++
		}
	}
	rep.Reminders.Sent = len(byRef)
	for _, n := range byRef {
		rep.DuplicateSMS += n - 1
	}
	for rid := range gt.reminders {
		if byRef[rid] == 0 {
			rep.MissingSMS++
		}
	}
	failed, err := stream.ReadAll(ctx, r.svc.brokers(), topicFailed)
	if err != nil {
		return fmt.Errorf("read failed-reminders topic: %w", err)
	}
	rep.Reminders.FailedEvents = len(failed)
	return nil
}

// verifyDeadLetters: exactly the malformed messages, each with its reason and its bytes.
func (r *runner) verifyDeadLetters(ctx context.Context, rep *report, valid int) error {
	brokers := r.svc.brokers()
	r.mu.Lock()
	injected := map[string]malformed{}
	for _, m := range r.malformed {
		injected[m.Key] = m
	}
	r.mu.Unlock()
	rep.DeadLetter.Injected = len(injected)
	rep.Input.Malformed = len(injected)
	var err error
	if rep.Input.Messages, err = endOffsets(ctx, brokers, topicAppointments, appointmentParts); err != nil {
		return fmt.Errorf("count appointment messages: %w", err)
	}
	rep.Input.Duplicates = rep.Input.Messages - int64(valid+len(injected))
	dlq, err := stream.ReadAll(ctx, brokers, topicDLQ)
	if err != nil {
		return fmt.Errorf("read dead-letter topic: %w", err)
	}
	rep.DeadLetter.Messages = len(dlq)
	rep.DeadLetter.ByKind = map[string]int{}
	found := map[string]int{}
	for _, m := range dlq {
		var d events.DeadLetter
		if err := json.Unmarshal(m.Value, &d); err != nil {
			rep.DeadLetter.Unexpected++
			continue
		}
		in, ok := injected[string(d.Key)]
		if !ok {
			rep.DeadLetter.Unexpected++
			continue
		}
		found[in.Key]++
		if found[in.Key] > 1 {
			continue
		}
		rep.DeadLetter.ByKind[in.Kind]++
		if !strings.Contains(d.Reason, in.Reason) {
			rep.DeadLetter.WrongReason++
			r.log.Warn("dead letter with an unexpected reason", "kind", in.Kind, "reason", d.Reason, "want", in.Reason)
		}
		if string(d.Value) != string(in.Value) {
			rep.DeadLetter.WrongBytes++
		}
	}
	rep.DeadLetter.Found = len(found)
	for _, n := range found {
		rep.DeadLetter.Redelivered += n - 1
	}
	rep.DeadLetter.Missing = len(injected) - len(found)
	return nil
}

// collectFaults puts every injected fault in the report, the suite's and Notify's, with the
// peak memory of each role, and returns the violations recorded while the run went on.
func (r *runner) collectFaults(rep *report, nf *faultyNotify) []string {
	r.mu.Lock()
	rep.Faults = append([]fault(nil), r.faults...)
	for _, f := range rep.Faults {
		rep.FaultCounts[f.Kind]++
	}
	for k, n := range nf.faults() {
		rep.FaultCounts[k] += n
		// One entry per kind in the list; the counts say how many.
		rep.Faults = append(rep.Faults, fault{Kind: k, Phase: "sweep", Target: "notify", Detail: fmt.Sprintf("%d requests", n)})
	}
	violations := append([]string(nil), r.violations...)
	r.mu.Unlock()
	if n := rep.FaultCounts["notify_429_retry_after"]; n > 0 {
		rep.FaultCounts["notify_429"] += n
	}
	rep.PeakRSSMB = r.ps.peakMB()
	for role, mb := range rep.PeakRSSMB {
		rep.PeakRSSMB[role] = round(mb, 1)
	}
	return violations
}

// judge adds to violations every count of the report that must be zero and is not, a full
// run short of 100,000 events, and every required fault never injected.
func (r *runner) judge(rep *report, violations []string) []string {
	check := func(ok bool, format string, args ...any) {
		if !ok {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}
	check(rep.Lost == 0, "lost = %d: appointments whose latest booking version was never scored", rep.Lost)
	check(rep.Risk.Missing == 0, "%d booking versions the ground truth scores have no risk event", rep.Risk.Missing)
	check(rep.Risk.Unexpected == 0, "%d risk events for versions the ground truth does not score", rep.Risk.Unexpected)
	check(rep.Risk.Mismatch == 0, "%d risk events whose probability or band differs from the ground truth", rep.Risk.Mismatch)
	check(rep.DoubleCounted == 0, "double_counted = %d history facts beyond the ground truth", rep.DoubleCounted)
	check(rep.History.MissingFacts == 0, "%d history facts missing from Redis", rep.History.MissingFacts)
	check(rep.History.Unexpected == 0, "%d histories of patients not in the input", rep.History.Unexpected)
	check(rep.Monitor.Outcomes > 0, "no outcomes in the input to check the monitor against")
	check(rep.Monitor.Missing == 0, "the monitor holds %d of %d outcomes (%d missing)", rep.Monitor.Joined, rep.Monitor.Outcomes, rep.Monitor.Missing)
	check(rep.Monitor.DoubleCounted == 0, "the monitor counted %d outcomes twice", rep.Monitor.DoubleCounted)
	check(rep.Monitor.Mismatch == 0, "%d of the monitor's outcomes differ from the input or the served score", rep.Monitor.Mismatch)
	check(rep.DuplicateSMS == 0, "duplicate_sms = %d", rep.DuplicateSMS)
	check(rep.MissingSMS == 0, "missing_sms = %d of %d due", rep.MissingSMS, rep.Reminders.Due)
	check(rep.Reminders.Unexpected == 0, "%d text messages no reminder policy wanted", rep.Reminders.Unexpected)
	check(rep.Reminders.WrongTemplate == 0, "%d text messages with the wrong template", rep.Reminders.WrongTemplate)
	check(rep.DeadLetter.Missing == 0, "%d malformed messages not dead-lettered", rep.DeadLetter.Missing)
	check(rep.DeadLetter.Unexpected == 0, "%d dead letters that are not injected malformed messages", rep.DeadLetter.Unexpected)
	check(rep.DeadLetter.WrongReason == 0, "%d dead letters without the expected reason", rep.DeadLetter.WrongReason)
	check(rep.DeadLetter.WrongBytes == 0, "%d dead letters not carrying the original bytes", rep.DeadLetter.WrongBytes)
	check(rep.Input.Events >= 100000 || r.cfg.profile != "full", "only %d events: the full run needs at least 100,000", rep.Input.Events)
	for _, k := range append(slices.Clone(requiredFaults), kafkaFaults[r.cfg.kafkaNodes]...) {
		check(rep.FaultCounts[k] > 0, "fault %s was never injected", k)
	}
	return violations
}

func phaseOrder(p string) string {
	if p == "intake" {
		return "0"
	}
	return "1"
}

// diffFacts counts the facts got has beyond want (each fact as often as it appears) and
// the facts of want it lacks.
func diffFacts(got, want []featurestore.Fact) (extra, missing int) {
	n := map[featurestore.Fact]int{}
	for _, f := range want {
		n[f]++
	}
	for _, f := range got {
		n[f]--
	}
	for _, c := range n {
		if c < 0 {
			extra -= c
		} else {
			missing += c
		}
	}
	return extra, missing
}
