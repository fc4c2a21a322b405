// Command promote makes a shadow challenger the serving model, or puts the previous one
// back, by swapping the model directory the consumer watches (--model-dir) atomically:
//
//	promote --live DIR --candidate DIR --monitor-url URL [--monitor-token-file FILE]
//	        [--min-outcomes 500] [--force --reason TEXT] [--by NAME]
//	promote --rollback --live DIR [--reason TEXT] [--by NAME]
//
// Promotion reads the monitor's comparison of champion and challenger on the same outcomes
// (the "challenger" object of its /monitor.json) and refuses unless the candidate is the
// challenger the monitor measured, the live directory holds the champion it measured against,
// there are at least --min-outcomes outcomes, and the lower end of the 95% CI of the paired
// AUC difference (challenger minus champion) is above 0; --force with a --reason overrides
// the comparison (never the checks that the candidate loads). The candidate must load as the
// consumer loads it and reproduce its parity.csv (as cmd/modelcheck checks).
//
// The swap: the candidate is copied into a staging directory beside the live one, with
// promotion.json (the comparison, who and when, forced and why, the previous model); staging
// and live are then exchanged in one renameat2(RENAME_EXCHANGE), so the consumer's watcher
// (scoring.Watch polls the path) sees either the old directory or the new one, never a mix.
// The old live directory is kept as DIR.previous (replacing an older one); --rollback
// exchanges the two back, recording rollback.json. Linux only (renameat2).
//
// Exit status: 0 swapped; 1 refused (the comparison does not justify it, or the candidate
// does not load or match its parity rows) or failed; 2 invalid usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/scoring"
)

// Files promote writes into a model directory.
const (
	PromotionFile = "promotion.json"
	RollbackFile  = "rollback.json"
)

// PreviousSuffix names the kept previous live directory: DIR.previous.
const PreviousSuffix = ".previous"

type config struct {
	live, candidate string
	monitorURL      string
	monitorToken    string
	minOutcomes     int
	maxDiff         float64
	force, rollback bool
	reason, by      string
	timeout         time.Duration
	now             func() time.Time
	httpClient      *http.Client
	stdout, stderr  io.Writer
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "promote:", err)
		return 2
	}
	c.stdout, c.stderr = stdout, stderr
	var rec any
	if c.rollback {
		rec, err = c.doRollback()
	} else {
		rec, err = c.promote(context.Background())
	}
	if err != nil {
		fmt.Fprintln(stderr, "promote:", err)
		return 1
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	fmt.Fprintln(stdout, string(b))
	return 0
}

func parseArgs(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("promote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{now: time.Now}
	fs.StringVar(&c.live, "live", "", "the model directory the consumer serves (its --model-dir); a real directory, not a symlink")
	fs.StringVar(&c.candidate, "candidate", "", "the challenger's model directory (the consumer's --challenger-model-dir)")
	fs.StringVar(&c.monitorURL, "monitor-url", "", "the monitor's /monitor.json, whose \"challenger\" object compares the two models on the same outcomes")
	fs.StringVar(&c.monitorToken, "monitor-token-file", "", "file whose first token is sent to --monitor-url as a bearer token")
	fs.IntVar(&c.minOutcomes, "min-outcomes", 500, "fewest outcomes the comparison must rest on")
	fs.Float64Var(&c.maxDiff, "max-diff", 1e-9, "largest |Go - LightGBM| accepted on the candidate's parity rows (as cmd/modelcheck)")
	fs.BoolVar(&c.force, "force", false, "promote although the comparison does not justify it (needs --reason; the candidate must still load)")
	fs.StringVar(&c.reason, "reason", "", "why: required with --force, recorded in promotion.json or rollback.json")
	fs.BoolVar(&c.rollback, "rollback", false, "swap DIR.previous (the directory the last promotion replaced) back in as --live")
	fs.StringVar(&c.by, "by", "", "who is promoting, recorded (default: the OS user and host)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for --monitor-url")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: promote --live DIR --candidate DIR --monitor-url URL [--min-outcomes 500] [--force --reason TEXT]\n       promote --rollback --live DIR [--reason TEXT]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.live == "":
		return nil, errors.New("--live is required")
	case c.rollback && (c.candidate != "" || c.monitorURL != "" || c.force):
		return nil, errors.New("--rollback takes only --live, --reason and --by")
	case !c.rollback && (c.candidate == "" || c.monitorURL == ""):
		return nil, errors.New("--candidate and --monitor-url are required (or --rollback)")
	case c.force && strings.TrimSpace(c.reason) == "":
		return nil, errors.New("--force needs --reason saying why the comparison is overridden")
	case c.minOutcomes < 1:
		return nil, fmt.Errorf("--min-outcomes %d: want at least 1", c.minOutcomes)
	case c.timeout <= 0:
		return nil, fmt.Errorf("--timeout %s: want a positive duration", c.timeout)
	}
	var err error
	if c.live, err = filepath.Abs(filepath.Clean(c.live)); err != nil {
		return nil, err
	}
	if c.candidate != "" {
		if c.candidate, err = filepath.Abs(filepath.Clean(c.candidate)); err != nil {
			return nil, err
		}
	}
	if c.by == "" {
		c.by = whoAmI()
	}
	c.httpClient = &http.Client{Timeout: c.timeout}
	return c, nil
}

func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return name
}

// Comparison is the monitor's "challenger" object: champion and challenger on the same
// outcomes. Pointers are nil when the monitor has no value yet (JSON null or absent).
type Comparison struct {
	ModelID         string     `json:"model_id"`
	ChampionModelID string     `json:"champion_model_id"`
	Outcomes        int        `json:"outcomes"`
	AUCChampion     *float64   `json:"auc_champion"`
	AUCChallenger   *float64   `json:"auc_challenger"`
	AUCDiff         *float64   `json:"auc_diff"`
	AUCDiffCI95     []*float64 `json:"auc_diff_ci95"`
	OEChampion      *float64   `json:"oe_champion"`
	OEChallenger    *float64   `json:"oe_challenger"`
}

// Check is one condition of a promotion, as recorded.
type Check struct {
	Name   string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Promotion is promotion.json.
type Promotion struct {
	PromotedAt          time.Time       `json:"promoted_at"`
	PromotedBy          string          `json:"promoted_by"`
	ModelID             string          `json:"model_id"`
	ModelDigest         string          `json:"model_digest"`
	PreviousModelID     string          `json:"previous_model_id"`
	PreviousModelDigest string          `json:"previous_model_digest"`
	LiveDir             string          `json:"live_dir"`
	CandidateDir        string          `json:"candidate_dir"`
	PreviousDir         string          `json:"previous_dir"`
	MonitorURL          string          `json:"monitor_url"`
	MonitorError        string          `json:"monitor_error,omitempty"`
	MinOutcomes         int             `json:"min_outcomes"`
	Comparison          json.RawMessage `json:"comparison"` // the monitor's object, as received
	Checks              []Check         `json:"checks"`
	Justified           bool            `json:"justified"` // every check passed
	Forced              bool            `json:"forced"`
	Reason              string          `json:"reason,omitempty"`
	ParityMaxAbsDiff    float64         `json:"parity_max_abs_diff"`
	ParityRows          int             `json:"parity_rows"`
}

// Rollback is rollback.json.
type Rollback struct {
	RolledBackAt    time.Time `json:"rolled_back_at"`
	RolledBackBy    string    `json:"rolled_back_by"`
	ModelID         string    `json:"model_id"`
	PreviousModelID string    `json:"previous_model_id"` // the model rolled back from
	LiveDir         string    `json:"live_dir"`
	Reason          string    `json:"reason,omitempty"`
}

func (c *config) promote(ctx context.Context) (*Promotion, error) {
	live, err := scoring.Load(c.live)
	if err != nil {
		return nil, fmt.Errorf("--live: %w", err)
	}
	cand, err := scoring.Load(c.candidate)
	if err != nil {
		return nil, fmt.Errorf("refused: --candidate does not load as the consumer loads it: %w", err)
	}
	if cand.Digest() == live.Digest() {
		return nil, fmt.Errorf("refused: --candidate is the model already live (%s)", live.ID())
	}
	p := &Promotion{
		PromotedAt: c.now().UTC(), PromotedBy: c.by, ModelID: cand.ID(), ModelDigest: cand.Digest(),
		PreviousModelID: live.ID(), PreviousModelDigest: live.Digest(), LiveDir: c.live, CandidateDir: c.candidate,
		PreviousDir: c.live + PreviousSuffix, MonitorURL: c.monitorURL, MinOutcomes: c.minOutcomes,
		Forced: c.force, Reason: c.reason, Comparison: json.RawMessage("null"),
	}
	raw, cmp, err := c.fetch(ctx)
	if err != nil {
		p.MonitorError = err.Error()
		p.Checks = []Check{{Name: "monitor", OK: false, Detail: err.Error()}}
	} else {
		p.Comparison = raw
		p.Checks = checks(cmp, cand.ID(), live.ID(), c.minOutcomes)
	}
	p.Justified = true
	var failed []string
	for _, ch := range p.Checks {
		if !ch.OK {
			p.Justified = false
			failed = append(failed, ch.Detail)
		}
	}
	if !p.Justified && !c.force {
		return nil, fmt.Errorf("refused: the comparison does not justify promoting %s over %s: %s (override with --force --reason TEXT)",
			cand.ID(), live.ID(), strings.Join(failed, "; "))
	}
	// The parity rows last, as they take longest: the model must score as LightGBM does.
	checked, rep, err := scoring.CheckParityDir(c.candidate)
	switch {
	case checked == nil:
		return nil, fmt.Errorf("refused: --candidate does not load as the consumer loads it: %w", err)
	case err != nil:
		return nil, fmt.Errorf("refused: --candidate %s loads but its parity cannot be checked: %w", checked.ID(), err)
	case checked.Digest() != cand.Digest():
		return nil, fmt.Errorf("refused: --candidate changed while it was checked (%s, then %s): try again", cand.ID(), checked.ID())
	case rep.MaxAbsDiff > c.maxDiff || rep.Rows < 1:
		return nil, fmt.Errorf("refused: --candidate %s: max |Go - LightGBM| = %g over %d parity rows, want <= %g", cand.ID(), rep.MaxAbsDiff, rep.Rows, c.maxDiff)
	}
	p.ParityMaxAbsDiff, p.ParityRows = rep.MaxAbsDiff, rep.Rows
	if !p.Justified {
		fmt.Fprintf(c.stderr, "promote: --force: promoting %s although %s; reason: %s\n", cand.ID(), strings.Join(failed, "; "), c.reason)
	}
	record, _ := json.MarshalIndent(p, "", "  ")
	if err := c.swapIn(cand, append(record, '\n')); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.stderr, "promote: %s is live in %s (was %s, kept in %s)\n", cand.ID(), c.live, live.ID(), p.PreviousDir)
	return p, nil
}

// checks are the conditions under which the comparison justifies the promotion.
func checks(cmp *Comparison, candidateID, liveID string, minOutcomes int) []Check {
	out := []Check{
		{Name: "challenger_is_candidate", OK: cmp.ModelID == candidateID,
			Detail: fmt.Sprintf("the monitor's challenger is %q, the candidate is %q", cmp.ModelID, candidateID)},
		{Name: "champion_is_live", OK: cmp.ChampionModelID == liveID,
			Detail: fmt.Sprintf("the monitor's champion is %q, the live directory holds %q", cmp.ChampionModelID, liveID)},
		{Name: "enough_outcomes", OK: cmp.Outcomes >= minOutcomes,
			Detail: fmt.Sprintf("%d outcomes compared, want at least %d", cmp.Outcomes, minOutcomes)},
	}
	ci := Check{Name: "challenger_significantly_better"}
	if len(cmp.AUCDiffCI95) != 2 || cmp.AUCDiffCI95[0] == nil || cmp.AUCDiffCI95[1] == nil {
		ci.Detail = "the monitor has no 95% CI of the AUC difference yet"
	} else {
		lo, hi := *cmp.AUCDiffCI95[0], *cmp.AUCDiffCI95[1]
		ci.OK = lo > 0
		ci.Detail = fmt.Sprintf("AUC difference (challenger - champion) 95%% CI [%.4f, %.4f]: its lower end must be above 0", lo, hi)
	}
	return append(out, ci)
}

// fetch GETs the monitor's JSON and returns its "challenger" object, raw and decoded.
func (c *config) fetch(ctx context.Context) (json.RawMessage, *Comparison, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.monitorURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--monitor-url: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.monitorToken != "" {
		tok, err := authn.ReadToken(c.monitorToken)
		if err != nil {
			return nil, nil, fmt.Errorf("--monitor-token-file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := c.httpClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("monitor: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("monitor: %s answered %s", c.monitorURL, res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("monitor: %w", err)
	}
	var doc struct {
		Challenger json.RawMessage `json:"challenger"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("monitor: %s is not JSON: %w", c.monitorURL, err)
	}
	if len(doc.Challenger) == 0 || string(doc.Challenger) == "null" {
		return nil, nil, errors.New("monitor: no \"challenger\" comparison (is the consumer running with --challenger-model-dir, and the monitor reading the shadow topic?)")
	}
	var cmp Comparison
	if err := json.Unmarshal(doc.Challenger, &cmp); err != nil {
		return nil, nil, fmt.Errorf("monitor: \"challenger\": %w", err)
	}
	return doc.Challenger, &cmp, nil
}

func (c *config) doRollback() (*Rollback, error) {
	prevDir := c.live + PreviousSuffix
	live, err := scoring.Load(c.live)
	if err != nil {
		return nil, fmt.Errorf("--live: %w", err)
	}
	prev, err := scoring.Load(prevDir)
	if err != nil {
		return nil, fmt.Errorf("refused: nothing to roll back to: %w", err)
	}
	r := &Rollback{RolledBackAt: c.now().UTC(), RolledBackBy: c.by, ModelID: prev.ID(), PreviousModelID: live.ID(), LiveDir: c.live, Reason: c.reason}
	unlock, err := lock(c.live)
	if err != nil {
		return nil, err
	}
	defer unlock()
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := writeFileSync(filepath.Join(prevDir, RollbackFile), append(b, '\n')); err != nil {
		return nil, err
	}
	if err := checkDir(c.live); err != nil {
		return nil, err
	}
	if err := exchange(prevDir, c.live); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.stderr, "promote: rolled back: %s is live in %s again (%s kept in %s)\n", prev.ID(), c.live, live.ID(), prevDir)
	return r, nil
}
