package envflag

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParsePrecedenceAndErrors(t *testing.T) {
	env := map[string]string{"A": "from-env", "N": "7"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	newFS := func() (*flag.FlagSet, *string, *int) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.String("a", "default", "a"), fs.Int("n", 1, "n")
	}
	e := Env{"a": "A", "n": "N"}

	fs, a, n := newFS()
	if err := e.Parse(fs, []string{"--a", "from-flag"}, lookup, io.Discard, "usage"); err != nil {
		t.Fatal(err)
	}
	if *a != "from-flag" || *n != 7 {
		t.Fatalf("a=%q n=%d, want the flag over the environment, the environment over the default", *a, *n)
	}
	env["N"] = "seven"
	fs, _, _ = newFS()
	if err := e.Parse(fs, nil, lookup, io.Discard, "usage"); err == nil || !strings.Contains(err.Error(), "N") {
		t.Fatalf("bad environment value: %v, want an error naming N", err)
	}
	fs, _, _ = newFS()
	if err := e.Parse(fs, []string{"stray"}, lookup, io.Discard, "usage"); err == nil {
		t.Fatal("stray argument accepted")
	}
	var help strings.Builder
	fs, _, _ = newFS()
	if err := e.Parse(fs, []string{"--help"}, lookup, &help, "usage: x"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "(env A)") {
		t.Fatalf("--help: %v\n%s", err, help.String())
	}
}

func TestList(t *testing.T) {
	if got := List(" a:1, b:2,,c:3 ,"); !reflect.DeepEqual(got, []string{"a:1", "b:2", "c:3"}) {
		t.Fatalf("List = %q", got)
	}
	if got := List(" , "); got != nil {
		t.Fatalf("List of blanks = %q, want nil", got)
	}
}
