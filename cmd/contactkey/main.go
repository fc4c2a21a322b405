// Command contactkey re-encrypts the contact store under its current key, the step of a
// contact key rotation that runs while the gateway and dispatchers keep serving
// (docs/security.md, "Rotating secrets"):
//
//  1. give every dispatcher the new key as DNA_CONTACT_KEY and the old one as
//     DNA_CONTACT_KEY_PREVIOUS (they read both), then the gateway (it writes with the new);
//  2. run `contactkey rekey` with the same two variables: each phone sealed under the old key
//     is re-sealed under the new one, only if no writer changed it meanwhile;
//  3. when a second run reports nothing left to re-key, remove DNA_CONTACT_KEY_PREVIOUS.
//
// `contactkey rekey --dry-run` only counts. The report is one JSON line on stdout; exit 1
// when a phone decrypts under none of the keys given (it stays as it is).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/secconfig"
	"github.com/nhsx/dnarisk/reminders/contacts"
)

const usage = "usage: contactkey rekey [--dry-run] [flags]\n\nRe-encrypts every stored mobile number under DNA_CONTACT_KEY, reading DNA_CONTACT_KEY_PREVIOUS too. Flags (flag > environment > default):"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// report is what rekey prints: contacts.RekeyReport with the keys' ids.
type report struct {
	contacts.RekeyReport
	DryRun       bool     `json:"dry_run"`
	CurrentKey   string   `json:"current_key_id"`
	PreviousKeys []string `json:"previous_key_ids"`
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rekey" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("contactkey rekey", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	env := envflag.Env{"redis": "REDIS_ADDR", "redis-prefix": "REDIS_PREFIX"}
	redisAddrs := fs.String("redis", "127.0.0.1:6379", "Redis address; several comma-separated addresses mean a Redis Cluster")
	prefix := fs.String("redis-prefix", "dna:", "prefix of every Redis key")
	dryRun := fs.Bool("dry-run", false, "count what would be re-keyed, change nothing")
	var rsec secconfig.Redis
	rsec.Register(fs, env)
	if err := env.Parse(fs, args[1:], lookup, stderr, usage); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "contactkey: invalid configuration:", err)
		return 2
	}
	keys, err := contacts.KeysFromEnv(lookup)
	if err != nil {
		fmt.Fprintln(stderr, "contactkey:", err)
		return 2
	}
	opts := redis.UniversalOptions{Addrs: envflag.List(*redisAddrs), DisableIdentity: true}
	if err := rsec.Apply(&opts, lookup); err != nil {
		fmt.Fprintln(stderr, "contactkey: invalid configuration:", err)
		return 2
	}
	rdb := redis.NewUniversalClient(&opts)
	defer rdb.Close()
	store, err := keys.Open(rdb, *prefix)
	if err != nil {
		fmt.Fprintln(stderr, "contactkey:", err)
		return 2
	}
	rep := report{DryRun: *dryRun, CurrentKey: contacts.KeyID(keys.Current), PreviousKeys: []string{}}
	for _, k := range keys.Previous {
		rep.PreviousKeys = append(rep.PreviousKeys, contacts.KeyID(k))
	}
	rep.RekeyReport, err = store.Rekey(ctx, *dryRun)
	if rep.Failed == nil {
		rep.Failed = []string{}
	}
	_ = json.NewEncoder(stdout).Encode(rep)
	if err != nil {
		fmt.Fprintln(stderr, "contactkey: stopped part way (run it again; it resumes):", err)
		return 1
	}
	if len(rep.Failed) > 0 {
		fmt.Fprintf(stderr, "contactkey: %d phones decrypt under none of the keys given; they are left as they are\n", len(rep.Failed))
		return 1
	}
	return 0
}
