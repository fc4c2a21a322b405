package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/scoring"
)

// copyDir copies a model directory (every file) to a new directory to.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := copyTree(from, to); err != nil {
		t.Fatal(err)
	}
}

type rig struct {
	root, live, cand string
	liveID, candID   string
	liveDigest       string
	monitor          *httptest.Server
	body             atomic.Value // string served as /monitor.json
	status           atomic.Int32
}

// newRig makes a live directory holding models/default and a candidate holding
// models/decision in a temporary directory, and a monitor serving r.body.
func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{root: t.TempDir()}
	r.live, r.cand = filepath.Join(r.root, "live"), filepath.Join(r.root, "candidate")
	copyDir(t, "../../models/default", r.live)
	copyDir(t, "../../models/decision", r.cand)
	l, err := scoring.Load(r.live)
	if err != nil {
		t.Fatal(err)
	}
	c, err := scoring.Load(r.cand)
	if err != nil {
		t.Fatal(err)
	}
	r.liveID, r.candID, r.liveDigest = l.ID(), c.ID(), l.Digest()
	r.status.Store(http.StatusOK)
	r.monitor = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/monitor.json" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(r.status.Load()))
		io.WriteString(w, r.body.Load().(string))
	}))
	t.Cleanup(r.monitor.Close)
	return r
}

// serve sets the monitor's challenger object.
func (r *rig) serve(challenger string) {
	r.body.Store(`{"live":{"auc":0.7},"challenger":` + challenger + `}`)
}

// comparison is a challenger object with the rig's ids and the given outcomes and CI.
func (r *rig) comparison(outcomes int, lo, hi string) string {
	return fmt.Sprintf(`{"model_id":%q,"champion_model_id":%q,"outcomes":%d,"auc_champion":0.70,"auc_challenger":0.72,
		"auc_diff":0.02,"auc_diff_ci95":[%s,%s],"oe_champion":1.01,"oe_challenger":0.98}`, r.candID, r.liveID, outcomes, lo, hi)
}

func (r *rig) run(t *testing.T, extra ...string) (int, string, string) {
	t.Helper()
	args := append([]string{"--live", r.live, "--candidate", r.cand, "--monitor-url", r.monitor.URL + "/monitor.json", "--by", "tester"}, extra...)
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// liveModel is the model the live directory holds now.
func (r *rig) liveModel(t *testing.T) *scoring.Model {
	t.Helper()
	m, err := scoring.Load(r.live)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// entries lists the names in the rig's root directory.
func (r *rig) entries(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(r.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func readPromotion(t *testing.T, dir string) Promotion {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, PromotionFile))
	if err != nil {
		t.Fatal(err)
	}
	var p Promotion
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// watch runs scoring.Watch on the live path as the consumer does and returns the ids of the
// models it hands over.
func (r *rig) watch(t *testing.T) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	current := r.liveModel(t)
	ids := make(chan string, 8)
	go scoring.Watch(ctx, r.live, 20*time.Millisecond, current, func(m *scoring.Model) { ids <- m.ID() },
		func(err error) { t.Errorf("the watcher refused the promoted directory: %v", err) })
	return ids
}

func waitFor(t *testing.T, ids <-chan string, want string) {
	t.Helper()
	select {
	case id := <-ids:
		if id != want {
			t.Fatalf("the watcher loaded %s, want %s", id, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the watcher never loaded %s", want)
	}
}

// A comparison that justifies it: the candidate becomes the live directory in one exchange,
// a watcher on the live path (the consumer's) loads it, promotion.json records the
// comparison, and the old directory is kept for rollback, which swaps it back.
func TestPromoteAndRollBack(t *testing.T) {
	r := newRig(t)
	r.serve(r.comparison(812, "0.004", "0.036"))
	ids := r.watch(t)
	code, stdout, stderr := r.run(t)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	waitFor(t, ids, r.candID)
	if id := r.liveModel(t).ID(); id != r.candID {
		t.Fatalf("live holds %s, want %s", id, r.candID)
	}
	p := readPromotion(t, r.live)
	var cmp Comparison
	if err := json.Unmarshal(p.Comparison, &cmp); err != nil {
		t.Fatal(err)
	}
	if p.ModelID != r.candID || p.PreviousModelID != r.liveID || p.Forced || !p.Justified || p.PromotedBy != "tester" ||
		cmp.Outcomes != 812 || *cmp.AUCDiffCI95[0] != 0.004 || *cmp.OEChallenger != 0.98 || len(p.Checks) != 4 || p.PromotedAt.IsZero() {
		t.Fatalf("promotion.json: %+v, comparison %+v", p, cmp)
	}
	var printed Promotion
	if err := json.Unmarshal([]byte(stdout), &printed); err != nil || printed.ModelID != r.candID {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	prev, err := scoring.Load(r.live + PreviousSuffix)
	if err != nil || prev.Digest() != r.liveDigest {
		t.Fatalf("live.previous: %v, %v; want the old live model", prev, err)
	}
	if got := r.entries(t); !slices.Equal(got, []string{".live.promote.lock", "candidate", "live", "live.previous"}) {
		t.Fatalf("left in the parent directory: %v", got)
	}

	var stderrB bytes.Buffer
	if code := run([]string{"--rollback", "--live", r.live, "--reason", "AUC fell", "--by", "tester"}, io.Discard, &stderrB); code != 0 {
		t.Fatalf("rollback: exit %d\n%s", code, stderrB.String())
	}
	waitFor(t, ids, r.liveID)
	if m := r.liveModel(t); m.Digest() != r.liveDigest {
		t.Fatalf("after rollback live holds %s", m.ID())
	}
	b, err := os.ReadFile(filepath.Join(r.live, RollbackFile))
	var rb Rollback
	if err != nil || json.Unmarshal(b, &rb) != nil || rb.ModelID != r.liveID || rb.PreviousModelID != r.candID || rb.Reason != "AUC fell" {
		t.Fatalf("rollback.json %s: %v", b, err)
	}
	if m, err := scoring.Load(r.live + PreviousSuffix); err != nil || m.ID() != r.candID {
		t.Fatalf("after rollback live.previous: %v, %v", m, err)
	}
}

// Each condition the comparison must meet, and a monitor that cannot be read: refused with
// the reason, and nothing in the live directory or beside it changes.
func TestPromoteRefusals(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"another challenger", strings.Replace(r.comparison(900, "0.01", "0.03"), r.candID, "dna-gbm-other", 1), 200, `the monitor's challenger is "dna-gbm-other"`},
		{"another champion", strings.Replace(r.comparison(900, "0.01", "0.03"), r.liveID, "dna-gbm-old", 1), 200, `the monitor's champion is "dna-gbm-old"`},
		{"too few outcomes", r.comparison(499, "0.01", "0.03"), 200, "499 outcomes compared, want at least 500"},
		{"not significantly better", r.comparison(900, "-0.002", "0.03"), 200, "CI [-0.0020, 0.0300]"},
		{"exactly zero", r.comparison(900, "0", "0.03"), 200, "its lower end must be above 0"},
		{"no CI yet", r.comparison(900, "null", "null"), 200, "no 95% CI"},
		{"no challenger", "null", 200, `no "challenger" comparison`},
		{"monitor down", "{}", 503, "503"},
		{"not JSON", "<html>", 200, "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.serve(tc.body)
			if tc.name == "not JSON" {
				r.body.Store("<html>")
			}
			r.status.Store(int32(tc.status))
			code, stdout, stderr := r.run(t)
			if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "refused") || stdout != "" {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tc.want)
			}
			if r.liveModel(t).Digest() != r.liveDigest {
				t.Fatal("the live directory changed")
			}
			if got := r.entries(t); !slices.Equal(got, []string{"candidate", "live"}) {
				t.Fatalf("left in the parent directory: %v", got)
			}
		})
	}
	r.status.Store(200)
	r.serve(r.comparison(600, "0.01", "0.03"))
	if code, _, stderr := r.run(t, "--min-outcomes", "700"); code != 1 || !strings.Contains(stderr, "want at least 700") {
		t.Fatalf("--min-outcomes 700: exit %d %s", code, stderr)
	}
}

// --force with a reason promotes against the comparison, and says so in promotion.json;
// without a reason it is a usage error.
func TestForceNeedsAReasonAndIsRecorded(t *testing.T) {
	r := newRig(t)
	r.serve(r.comparison(120, "-0.01", "0.05"))
	if code, _, stderr := r.run(t, "--force"); code != 2 || !strings.Contains(stderr, "--reason") {
		t.Fatalf("--force without --reason: exit %d %s", code, stderr)
	}
	code, _, stderr := r.run(t, "--force", "--reason", "the champion's source field was retired by the PAS upgrade")
	if code != 0 || !strings.Contains(stderr, "--force") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	p := readPromotion(t, r.live)
	if !p.Forced || p.Justified || !strings.Contains(p.Reason, "PAS upgrade") || p.ModelID != r.candID {
		t.Fatalf("promotion.json %+v", p)
	}
	failed := 0
	for _, c := range p.Checks {
		if !c.OK {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("checks %+v, want outcomes and CI failed", p.Checks)
	}
	// The monitor unreachable: forced through, with its error recorded.
	r2 := newRig(t)
	r2.monitor.Close()
	if code, _, stderr := r2.run(t, "--force", "--reason", "monitor retired"); code != 0 {
		t.Fatalf("forced with the monitor down: exit %d %s", code, stderr)
	}
	if p := readPromotion(t, r2.live); p.MonitorError == "" || string(p.Comparison) != "null" || !p.Forced {
		t.Fatalf("promotion.json %+v", p)
	}
}

// A candidate that does not load, or whose parity cannot be checked, is refused even with
// --force; so is a live path that is a symlink, and the live model as candidate.
func TestCandidateMustLoad(t *testing.T) {
	r := newRig(t)
	r.serve(r.comparison(900, "0.01", "0.03"))
	mt := filepath.Join(r.cand, scoring.ModelFile)
	good, err := os.ReadFile(mt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mt, good[:len(good)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := r.run(t, "--force", "--reason", "x"); code != 1 || !strings.Contains(stderr, "does not load") {
		t.Fatalf("half a model.txt: exit %d %s", code, stderr)
	}
	if err := os.WriteFile(mt, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(r.cand, scoring.ParityFile), filepath.Join(r.root, "parity.csv")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := r.run(t, "--force", "--reason", "x"); code != 1 || !strings.Contains(stderr, "parity") {
		t.Fatalf("no parity.csv: exit %d %s", code, stderr)
	}
	if err := os.Rename(filepath.Join(r.root, "parity.csv"), filepath.Join(r.cand, scoring.ParityFile)); err != nil {
		t.Fatal(err)
	}
	// No difference is small enough under a negative bound: the parity rows are compared.
	if code, _, stderr := r.run(t, "--max-diff", "-1"); code != 1 || !strings.Contains(stderr, "parity rows, want <= -1") {
		t.Fatalf("--max-diff -1: exit %d %s", code, stderr)
	}
	if r.liveModel(t).Digest() != r.liveDigest {
		t.Fatal("the live directory changed")
	}
	link := filepath.Join(r.root, "link")
	if err := os.Symlink(r.live, link); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--live", link, "--candidate", r.cand, "--monitor-url", r.monitor.URL + "/monitor.json", "--force", "--reason", "x"}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "symlink") {
		t.Fatalf("a symlinked live: exit %d %s", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"--live", r.live, "--candidate", r.live, "--monitor-url", r.monitor.URL + "/monitor.json"}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "already live") {
		t.Fatalf("the live model as candidate: exit %d %s", code, stderr.String())
	}
}

// What an interrupted promote left beside the live directory stops the next one until an
// operator has looked at it.
func TestInterruptedPromoteIsNotCleanedUpBlindly(t *testing.T) {
	r := newRig(t)
	r.serve(r.comparison(900, "0.01", "0.03"))
	left := filepath.Join(r.root, ".live.promote-4242")
	copyDir(t, "../../models/default", left)
	if code, _, stderr := r.run(t); code != 1 || !strings.Contains(stderr, "interrupted") || !strings.Contains(stderr, left) {
		t.Fatalf("exit %d %s", code, stderr)
	}
	if r.liveModel(t).Digest() != r.liveDigest {
		t.Fatal("the live directory changed")
	}
	if _, err := os.Stat(left); err != nil {
		t.Fatalf("the leftover was removed: %v", err)
	}
	if err := os.RemoveAll(left); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := r.run(t); code != 0 {
		t.Fatalf("after removing it: exit %d %s", code, stderr)
	}
}

// A second promotion replaces the older kept directory, and leaves no staging behind.
func TestSecondPromotionReplacesPrevious(t *testing.T) {
	r := newRig(t)
	r.serve(r.comparison(900, "0.01", "0.03"))
	if code, _, stderr := r.run(t); code != 0 {
		t.Fatalf("first: exit %d %s", code, stderr)
	}
	// Now the original champion comes back as the challenger of the promoted one.
	back := filepath.Join(r.root, "back")
	copyDir(t, "../../models/default", back)
	r.body.Store(fmt.Sprintf(`{"challenger":{"model_id":%q,"champion_model_id":%q,"outcomes":900,"auc_diff_ci95":[0.01,0.02]}}`, r.liveID, r.candID))
	var stderr bytes.Buffer
	if code := run([]string{"--live", r.live, "--candidate", back, "--monitor-url", r.monitor.URL + "/monitor.json"}, io.Discard, &stderr); code != 0 {
		t.Fatalf("second: exit %d %s", code, stderr.String())
	}
	if r.liveModel(t).ID() != r.liveID {
		t.Fatal("the second promotion did not swap")
	}
	if m, err := scoring.Load(r.live + PreviousSuffix); err != nil || m.ID() != r.candID {
		t.Fatalf("live.previous: %v %v, want the first promotion's model", m, err)
	}
	if got := r.entries(t); !slices.Equal(got, []string{".live.promote.lock", "back", "candidate", "live", "live.previous"}) {
		t.Fatalf("left in the parent directory: %v", got)
	}
}

// The monitor's token is sent as a bearer token; a rollback with nothing to roll back to is
// refused.
func TestMonitorTokenAndNothingToRollBack(t *testing.T) {
	r := newRig(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("# ops\ns3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"challenger":%s}`, r.comparison(900, "0.01", "0.03"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer s3cret-token" {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, body)
	}))
	defer srv.Close()
	args := []string{"--live", r.live, "--candidate", r.cand, "--monitor-url", srv.URL}
	if code := run(args, io.Discard, io.Discard); code != 1 {
		t.Fatalf("without the token: exit %d", code)
	}
	if code := run(append(args, "--monitor-token-file", tokFile), io.Discard, io.Discard); code != 0 {
		t.Fatalf("with the token: exit %d", code)
	}
	other := filepath.Join(t.TempDir(), "live")
	copyDir(t, "../../models/default", other)
	var stderr bytes.Buffer
	if code := run([]string{"--rollback", "--live", other}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "nothing to roll back to") {
		t.Fatalf("rollback without a previous: exit %d %s", code, stderr.String())
	}
	for _, bad := range [][]string{{}, {"--live", other}, {"--rollback", "--live", other, "--candidate", r.cand}, {"--live", other, "--candidate", r.cand, "--monitor-url", srv.URL, "--min-outcomes", "0"}} {
		if code := run(bad, io.Discard, io.Discard); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}

// The monitor's own type, as cmd/monitor serves it in /monitor.json, is what promote reads.
func TestReadsTheMonitorsShape(t *testing.T) {
	r := newRig(t)
	c := monitor.Challenger{Model: r.candID, Champion: r.liveID, Outcomes: 640, AUCChampion: 0.70, AUCChallenger: 0.73,
		AUCDiff: 0.03, AUCDiffCI: monitor.Interval{0.012, 0.048}, OEChampion: 1.02, OEChallenger: 0.99, WindowDays: 90}
	b, err := json.Marshal(map[string]any{"challenger": c})
	if err != nil {
		t.Fatal(err)
	}
	r.body.Store(string(b))
	if code, _, stderr := r.run(t); code != 0 {
		t.Fatalf("exit %d %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal(readPromotion(t, r.live).Comparison, &got); err != nil || got["window_days"] != 90.0 {
		t.Fatalf("recorded comparison %v (%v), want the monitor's object as served", got, err)
	}
	// Not enough outcomes for a CI: the monitor leaves it [0, 0], which is refused.
	r2 := newRig(t)
	c = monitor.Challenger{Model: r2.candID, Champion: r2.liveID, Outcomes: 900}
	b, _ = json.Marshal(map[string]any{"challenger": c})
	r2.body.Store(string(b))
	if code, _, stderr := r2.run(t); code != 1 || !strings.Contains(stderr, "CI [0.0000, 0.0000]") {
		t.Fatalf("a CI of [0, 0]: exit %d %s", code, stderr)
	}
}
