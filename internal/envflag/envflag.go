// Package envflag gives every flag of a command an environment variable fallback, with the
// precedence flag > environment > default, and reports a bad value by the variable's name,
// so a container configured only by environment gets the same one-line refusal as a person
// typing flags.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Env maps flag names to the environment variables behind them.
type Env map[string]string

// Annotate appends "(env NAME)" to the usage of every flag in e, for --help.
func (e Env) Annotate(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := e[f.Name]; ok {
			f.Usage += " (env " + v + ")"
		}
	})
}

// Apply sets every flag in e that the command line did not set from its variable, when that
// variable is set and not empty. lookup is os.LookupEnv outside tests. It stops at the first
// value the flag refuses.
func (e Env) Apply(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	names := make([]string, 0, len(e))
	for name := range e {
		names = append(names, name)
	}
	sort.Strings(names) // the same variable is reported first on every run
	for _, name := range names {
		v, ok := lookup(e[name])
		if set[name] || !ok || v == "" {
			continue
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("envflag: no flag %q for %s", name, e[name])
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("invalid value %q in %s for --%s: %v", v, e[name], name, err)
		}
	}
	return nil
}

// Parse annotates fs, parses args, then applies the environment: the whole of a command's
// flag handling. On --help it prints usage and the flags to stderr and returns
// flag.ErrHelp; stray arguments are an error.
func (e Env) Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool), stderr io.Writer, usage string) error {
	e.Annotate(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return e.Apply(fs, lookup)
}

// List splits a comma-separated setting, dropping blanks ("a:1, b:2," → [a:1 b:2]).
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
