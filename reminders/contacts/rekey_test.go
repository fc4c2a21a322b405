package contacts_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/contacts"
)

// sealV1 writes a phone in the format stores wrote before key ids ("v1:"), as a store
// upgraded in place still holds it.
func sealV1(t *testing.T, key []byte, patient, phone string) string {
	t.Helper()
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	nonce[0] = 9
	return "v1:" + base64.StdEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(phone), []byte(patient)))
}

// rotation fills a store under oldKey (one record in the v1 format, one opt-out only), then
// re-keys it to newKey through a store that reads both, checking that every reader sees the
// same numbers at each step.
func rotation(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	prefix := fmt.Sprintf("rk%d:", time.Now().UnixNano())
	oldKey, newKey := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("n", 32))
	before, _ := contacts.NewStore(rdb, prefix, oldKey)
	patients := make([]string, 40)
	for i := range patients {
		patients[i] = fmt.Sprintf("%064x", i+1)
		t.Cleanup(func() { rdb.Del(context.Background(), before.Key(patients[i])) })
	}
	for i, p := range patients[:37] {
		if err := before.Put(ctx, p, contacts.Contact{Phone: contacts.Drama(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rdb.HSet(ctx, before.Key(patients[37]), "phone", sealV1(t, oldKey, patients[37], "07700900037"), "opt_out", "0")
	rdb.HSet(ctx, before.Key(patients[38]), "opt_out", "1")
	// One record under a key nobody was given: reported, left alone.
	stranger, _ := contacts.NewStore(rdb, prefix, []byte(strings.Repeat("s", 32)))
	if err := stranger.Put(ctx, patients[39], contacts.Contact{Phone: contacts.Drama(39)}); err != nil {
		t.Fatal(err)
	}
	check := func(s *contacts.Store, what string) {
		t.Helper()
		for i, p := range patients[:38] {
			c, err := s.Get(ctx, p)
			if err != nil || c.Phone.Reveal() != contacts.Drama(i).Reveal() {
				t.Fatalf("%s: patient %d: %q %v", what, i, c.Phone.Reveal(), err)
			}
		}
	}

	newOnly, _ := contacts.NewStore(rdb, prefix, newKey)
	if _, err := newOnly.Get(ctx, patients[0]); err == nil || !strings.Contains(err.Error(), contacts.KeyID(oldKey)) || !strings.Contains(err.Error(), "DNA_CONTACT_KEY_PREVIOUS") {
		t.Fatalf("new key alone on an old record: %v; want the old key's id and what to set", err)
	}
	both, err := contacts.NewStore(rdb, prefix, newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	check(both, "new key with the old as previous")

	dry, err := both.Rekey(ctx, true)
	if err != nil || dry.Records != 40 || dry.Rekeyed != 38 || dry.NoPhone != 1 || dry.Current != 0 || len(dry.Failed) != 1 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	if _, err := newOnly.Get(ctx, patients[0]); err == nil {
		t.Fatal("a dry run changed a record")
	}
	rep, err := both.Rekey(ctx, false)
	if err != nil || rep.Rekeyed != 38 || rep.NoPhone != 1 || len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0], patients[39]) {
		t.Fatalf("rekey: %+v %v", rep, err)
	}
	if strings.Contains(fmt.Sprint(rep), "07700") {
		t.Fatalf("the report shows a number: %+v", rep)
	}
	check(newOnly, "new key alone after the re-key")
	again, err := both.Rekey(ctx, false)
	if err != nil || again.Rekeyed != 0 || again.Current != 38 {
		t.Fatalf("second run: %+v %v", again, err)
	}
	if c, err := newOnly.Get(ctx, patients[38]); err != nil || !c.OptOut || !c.Phone.IsZero() {
		t.Fatalf("opt-out only record: %+v %v", c, err)
	}
}

func TestRekeyRotatesTheStoreWhileReadersKeepReading(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	rotation(t, rdb)
}

// Every primary of a Redis Cluster is scanned.
func TestRekeyOnRedisCluster(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	defer rdb.Close()
	rotation(t, rdb)
}

// A phone the gateway rewrites while it is being re-keyed keeps the gateway's value.
func TestRekeyNeverOverwritesANewerNumber(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	ctx := context.Background()
	prefix := fmt.Sprintf("rw%d:", time.Now().UnixNano())
	oldKey, newKey := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("n", 32))
	both, _ := contacts.NewStore(rdb, prefix, newKey, oldKey)
	old, _ := contacts.NewStore(rdb, prefix, oldKey)
	p := strings.Repeat("d", 64)
	t.Cleanup(func() { rdb.Del(ctx, both.Key(p)) })
	if err := old.Put(ctx, p, contacts.Contact{Phone: contacts.Drama(1)}); err != nil {
		t.Fatal(err)
	}
	// The gateway's write lands between the re-key's read and its write: a hook on the
	// script call makes it so.
	rdb.AddHook(writeBefore{cmd: "evalsha", do: func() {
		_ = both.Update(ctx, p, contacts.Update{Phone: ptr(contacts.Drama(2))})
	}})
	rep, err := both.Rekey(ctx, false)
	if err != nil || rep.Changed != 1 || rep.Rekeyed != 0 {
		t.Fatalf("rekey under a concurrent write: %+v %v", rep, err)
	}
	if c, err := both.Get(ctx, p); err != nil || c.Phone.Reveal() != contacts.Drama(2).Reveal() {
		t.Fatalf("after: %q %v, want the gateway's newer number", c.Phone.Reveal(), err)
	}
}

func ptr[T any](v T) *T { return &v }

// writeBefore runs do once, before the first command named cmd (or eval, its fallback).
type writeBefore struct {
	cmd string
	do  func()
}

func (w writeBefore) DialHook(next redis.DialHook) redis.DialHook { return next }
func (w writeBefore) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (w writeBefore) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	fired := false
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !fired && slices.Contains([]string{w.cmd, "eval"}, cmd.Name()) {
			fired = true
			w.do()
		}
		return next(ctx, cmd)
	}
}
