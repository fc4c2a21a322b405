package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/contacts"
)

func TestRekeyCommand(t *testing.T) {
	addr := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	prefix := fmt.Sprintf("ck%d:", time.Now().UnixNano())
	oldHex, newHex := strings.Repeat("0a", 32), strings.Repeat("0b", 32)
	oldKey, _ := contacts.ParseKey(oldHex)
	newKey, _ := contacts.ParseKey(newHex)
	old, _ := contacts.NewStore(rdb, prefix, oldKey)
	for i := range 5 {
		p := fmt.Sprintf("%064x", i)
		t.Cleanup(func() { rdb.Del(context.Background(), old.Key(p)) })
		if err := old.Put(ctx, p, contacts.Contact{Phone: contacts.Drama(i)}); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"REDIS_ADDR": addr, "REDIS_PREFIX": prefix, "DNA_CONTACT_KEY": newHex, "DNA_CONTACT_KEY_PREVIOUS": oldHex}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	rekey := func(args ...string) (report, int, string) {
		var stdout, stderr bytes.Buffer
		code := run(ctx, append([]string{"rekey"}, args...), lookup, &stdout, &stderr)
		var r report
		if code != 2 {
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("report %q: %v (stderr %s)", stdout.String(), err, stderr.String())
			}
		}
		return r, code, stderr.String()
	}
	if r, code, _ := rekey("--dry-run"); code != 0 || !r.DryRun || r.Rekeyed != 5 || r.CurrentKey != contacts.KeyID(newKey) || len(r.PreviousKeys) != 1 {
		t.Fatalf("dry run: %+v exit %d", r, code)
	}
	if r, code, _ := rekey(); code != 0 || r.Rekeyed != 5 || r.Records != 5 {
		t.Fatalf("rekey: %+v exit %d", r, code)
	}
	if r, code, _ := rekey(); code != 0 || r.Rekeyed != 0 || r.Current != 5 {
		t.Fatalf("second run: %+v exit %d", r, code)
	}
	newOnly, _ := contacts.NewStore(rdb, prefix, newKey)
	if c, err := newOnly.Get(ctx, fmt.Sprintf("%064x", 3)); err != nil || c.Phone.Reveal() != contacts.Drama(3).Reveal() {
		t.Fatalf("after: %q %v", c.Phone.Reveal(), err)
	}
	// Without the previous key after re-keying to yet another key, nothing decrypts: exit 1.
	env["DNA_CONTACT_KEY"], env["DNA_CONTACT_KEY_PREVIOUS"] = strings.Repeat("0c", 32), ""
	if r, code, stderr := rekey(); code != 1 || len(r.Failed) != 5 || !strings.Contains(stderr, "5 phones") {
		t.Fatalf("missing previous key: %+v exit %d %s", r, code, stderr)
	}
	for _, bad := range []map[string]string{
		{"DNA_CONTACT_KEY": ""},
		{"DNA_CONTACT_KEY": "short"},
		{"DNA_CONTACT_KEY": newHex, "DNA_CONTACT_KEY_PREVIOUS": newHex + ",nope"},
	} {
		env = bad
		if _, code, stderr := rekey(); code != 2 || strings.Contains(stderr, newHex) {
			t.Errorf("%v: exit %d %q", bad, code, stderr)
		}
	}
	var stderr bytes.Buffer
	if code := run(ctx, nil, lookup, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Fatalf("no subcommand: exit %d %q", code, stderr.String())
	}
}
