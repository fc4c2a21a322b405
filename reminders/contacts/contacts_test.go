package contacts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/contacts"
)

func TestParsePhone(t *testing.T) {
	for in, want := range map[string]string{"07700 900123": "07700900123", "+44 7700 900123": "07700900123",
		"0044 (7700) 900-123": "07700900123", "07700900123": "07700900123"} {
		p, err := contacts.ParsePhone(in)
		if err != nil || p.Reveal() != want {
			t.Errorf("%q: %q %v", in, p.Reveal(), err)
		}
	}
	for _, bad := range []string{"", "01632 960123", "0770090012", "+1 202 555 0100", "07700 900123 ext 4"} {
		if _, err := contacts.ParsePhone(bad); err == nil || strings.Contains(err.Error(), "900") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if d := contacts.Drama(1234).Reveal(); d != "07700900234" {
		t.Fatalf("drama %s", d)
	}
}

// A Phone never prints its digits: not through fmt, slog, JSON or %#v.
func TestPhoneIsRedacted(t *testing.T) {
	p, _ := contacts.ParsePhone("07700 900123")
	c := contacts.Contact{Phone: p}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("contact", "phone", p, "contact", c)
	j, _ := json.Marshal(c)
	all := fmt.Sprint(p) + fmt.Sprintf("%v %+v %#v %s", c, c, c, p) + buf.String() + string(j)
	if strings.Contains(all, "900123") {
		t.Fatalf("phone digits leaked: %s", all)
	}
}

func TestStoreEncryptsAtRest(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	ctx := context.Background()
	prefix := fmt.Sprintf("ct%d:", time.Now().UnixNano())
	key, err := contacts.ParseKey(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := contacts.NewStore(rdb, prefix, key)
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := strings.Repeat("a", 64), strings.Repeat("b", 64)
	t.Cleanup(func() { rdb.Del(ctx, s.Key(alice), s.Key(bob)) })
	if err := s.Put(ctx, alice, contacts.Contact{Phone: contacts.Drama(42)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, alice)
	if err != nil || got.Phone.Reveal() != "07700900042" || got.OptOut {
		t.Fatalf("%v %v", got.Phone.Reveal(), err)
	}
	raw, _ := rdb.HGetAll(ctx, s.Key(alice)).Result()
	if strings.Contains(fmt.Sprint(raw), "900042") || !strings.HasPrefix(raw["phone"], "v2:"+contacts.KeyID(key)+":") {
		t.Fatalf("stored in the clear: %v", raw)
	}
	if !strings.Contains(s.Key(alice), "{"+alice+"}") {
		t.Fatalf("key %s is not hash-tagged by pseudonym", s.Key(alice))
	}
	// A ciphertext copied onto another patient does not decrypt.
	rdb.HSet(ctx, s.Key(bob), "phone", raw["phone"], "opt_out", "0")
	if _, err := s.Get(ctx, bob); err == nil || strings.Contains(err.Error(), "900042") {
		t.Fatalf("moved ciphertext: %v", err)
	}
	// Another key does not decrypt either.
	other, _ := contacts.NewStore(rdb, prefix, bytes.Repeat([]byte{7}, 32))
	if _, err := other.Get(ctx, alice); err == nil {
		t.Fatal("decrypted under the wrong key")
	}
	if _, err := s.Get(ctx, strings.Repeat("c", 64)); !errors.Is(err, contacts.ErrNotFound) {
		t.Fatalf("missing contact: %v", err)
	}
	if err := s.PutMany(ctx, map[string]contacts.Contact{alice: {Phone: contacts.Drama(1), OptOut: true}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, alice); !got.OptOut || got.Phone.Reveal() != "07700900001" {
		t.Fatalf("after PutMany: %v %v", got.OptOut, got.Phone.Reveal())
	}
	if _, err := contacts.ParseKey("short"); err == nil {
		t.Fatal("short key accepted")
	}
}

// Update changes only the fields it sets: an opt-out without a number keeps the number, a
// zero Phone deletes it, and the number stays encrypted.
func TestStoreUpdate(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	ctx := context.Background()
	key, _ := contacts.ParseKey(strings.Repeat("cd", 32))
	s, err := contacts.NewStore(rdb, fmt.Sprintf("cu%d:", time.Now().UnixNano()), key)
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Repeat("c", 64)
	t.Cleanup(func() { rdb.Del(ctx, s.Key(p)) })
	if _, err := s.Get(ctx, p); !errors.Is(err, contacts.ErrNotFound) {
		t.Fatalf("before: %v", err)
	}
	phone, yes, no := contacts.Drama(7), true, false
	steps := []struct {
		u      contacts.Update
		number string
		optOut bool
	}{
		{contacts.Update{Phone: &phone}, "07700900007", false},
		{contacts.Update{OptOut: &yes}, "07700900007", true},
		{contacts.Update{}, "07700900007", true},
		{contacts.Update{Phone: &contacts.Phone{}, OptOut: &no}, "", false},
	}
	for i, st := range steps {
		if err := s.Update(ctx, p, st.u); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, p)
		if err != nil || got.Phone.Reveal() != st.number || got.OptOut != st.optOut {
			t.Fatalf("step %d: %q %v %v", i, got.Phone.Reveal(), got.OptOut, err)
		}
	}
	if raw := rdb.HGetAll(ctx, s.Key(p)).Val(); strings.Contains(fmt.Sprint(raw), "900007") {
		t.Fatalf("stored in the clear: %v", raw)
	}
}
