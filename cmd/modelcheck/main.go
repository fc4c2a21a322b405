// Command modelcheck validates a model directory the way the consumer will load it and
// measures Go/LightGBM parity on its parity.csv, before the directory is put where a
// consumer serves from:
//
//	modelcheck [-max-diff 1e-9] [-min-rows 1] models/<id>
//
// It prints one JSON object on stdout (scoring.ParityReport plus ok, features, digest and
// max_diff_allowed) and exits 0 when the model loads and every parity row is within
// -max-diff, 1 when parity fails, 2 when the directory does not load (the reason, on stderr,
// is the one the consumer would log when refusing the model). training/train.py runs it and
// copies the report into card.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nhsx/dnarisk/scoring"
)

type report struct {
	OK             bool    `json:"ok"`
	Dir            string  `json:"dir"`
	Features       int     `json:"features"`
	Digest         string  `json:"digest"`
	MaxDiffAllowed float64 `json:"max_diff_allowed"`
	scoring.ParityReport
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("modelcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	maxDiff := fs.Float64("max-diff", 1e-9, "largest |Go - LightGBM| accepted on any parity row")
	minRows := fs.Int("min-rows", 1, "fewest parity rows accepted")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: modelcheck [-max-diff 1e-9] [-min-rows 1] MODEL_DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	dir := fs.Arg(0)
	m, rep, err := scoring.CheckParityDir(dir)
	if m == nil {
		fmt.Fprintln(stderr, "modelcheck: refused:", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "modelcheck: %s loads (model %s) but parity cannot be checked: %v\n", dir, m.ID(), err)
		return 1
	}
	out := report{Dir: dir, Features: m.NumFeatures(), Digest: m.Digest(), MaxDiffAllowed: *maxDiff, ParityReport: rep}
	out.OK = rep.MaxAbsDiff <= *maxDiff && rep.Rows >= *minRows
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Fprintln(stdout, string(b))
	if !out.OK {
		fmt.Fprintf(stderr, "modelcheck: %s: max |Go - LightGBM| = %g over %d rows (worst at parity.csv line %d); want <= %g over at least %d rows\n",
			dir, rep.MaxAbsDiff, rep.Rows, rep.WorstLine, *maxDiff, *minRows)
		return 1
	}
	fmt.Fprintf(stderr, "modelcheck: %s: model %s loads; max |Go - LightGBM| = %.3g over %d rows\n", dir, m.ID(), rep.MaxAbsDiff, rep.Rows)
	return 0
}
