package secconfig_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/secconfig"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

const password = "correct-horse-battery-staple-42"

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// kafkaFrom parses args and env the way a command does and returns the stream options.
func kafkaFrom(t *testing.T, args []string, env map[string]string) ([]stream.Option, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e := envflag.Env{}
	var k secconfig.Kafka
	k.Register(fs, e)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(fs, envOf(env)); err != nil {
		return nil, err
	}
	return k.Options(envOf(env))
}

func TestSecretNeverPrints(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	os.WriteFile(f, []byte(password+"\n"), 0o600)
	s, err := secconfig.ReadSecret(envOf(map[string]string{"X_FILE": f}), "X", "")
	if err != nil || s.Reveal() != password {
		t.Fatalf("ReadSecret = %q, %v", s.Reveal(), err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "secret", s, "in_struct", struct{ S secconfig.Secret }{s})
	js, _ := json.Marshal(map[string]any{"s": s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q", s, s, s, s, s), logs.String(), string(js),
		fmt.Sprintf("%+v", struct{ S secconfig.Secret }{s})} {
		if strings.Contains(out, password) || !strings.Contains(out, "[redacted]") {
			t.Errorf("secret printed: %s", out)
		}
	}
}

func TestReadSecretSources(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("from-file\r\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tt := range []struct {
		name    string
		env     map[string]string
		flag    string
		want    string
		wantErr string
	}{
		{"nothing", nil, "", "", ""},
		{"env", map[string]string{"P": "from-env"}, "", "from-env", ""},
		{"file var", map[string]string{"P_FILE": good}, "", "from-file", ""},
		{"flag file", nil, good, "from-file", ""},
		{"both", map[string]string{"P_FILE": good, "P": "x"}, "", "", "both"},
		{"missing file", map[string]string{"P_FILE": filepath.Join(dir, "nope")}, "", "", "no such file"},
		{"empty file", nil, empty, "", "empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := secconfig.ReadSecret(envOf(tt.env), "P", tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || s.Reveal() != tt.want {
				t.Fatalf("got %q, %v; want %q", s.Reveal(), err, tt.want)
			}
		})
	}
}

func TestKafkaSettingsRefused(t *testing.T) {
	certs := testenv.NewCerts(t)
	for _, tt := range []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{[]string{"--kafka-sasl-mechanism", "PLAIN"}, nil, "want SCRAM"},
		{[]string{"--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-tls"}, nil, "needs --kafka-sasl-username"},
		{[]string{"--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "u"}, map[string]string{"KAFKA_SASL_PASSWORD": password}, "without TLS"},
		{[]string{"--kafka-sasl-username", "u"}, nil, "mechanism is not"},
		{[]string{"--kafka-ca-file", "/nonexistent/ca.pem"}, nil, "CA file"},
		{[]string{"--kafka-ca-file", certs.ServerKeyFile}, nil, "no PEM certificate"},
		{[]string{"--kafka-cert-file", certs.ClientCertFile}, nil, "both the cert file and the key file"},
		{nil, map[string]string{"KAFKA_TLS": "maybe"}, "KAFKA_TLS"},
	} {
		_, err := kafkaFrom(t, tt.args, tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%v %v: err = %v, want %q", tt.args, tt.env, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("error message carries the password: %v", err)
		}
	}
}

// secureCluster is an in-process Kafka that speaks only TLS and requires SASL/SCRAM.
func secureCluster(t *testing.T, server *tls.Config, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(server), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "scorer", password), kfake.SeedTopics(2, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// With the right settings the scorer's writer, group reader, admin and ReadAll all work over
// TLS with SCRAM; with a wrong password, no TLS or an untrusted CA, nothing gets through.
func TestKafkaTLSAndSCRAMAgainstBroker(t *testing.T) {
	certs := testenv.NewCerts(t)
	brokers := secureCluster(t, certs.Server, "appointments")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pwFile := filepath.Join(t.TempDir(), "kafka-password")
	os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
	args := []string{"--kafka-ca-file", certs.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "scorer"}

	opts, err := kafkaFrom(t, args, map[string]string{"KAFKA_SASL_PASSWORD_FILE": pwFile})
	if err != nil {
		t.Fatal(err)
	}
	w := stream.NewWriter(brokers, "appointments", opts...)
	defer w.Close()
	msgs := []kafka.Message{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}, {Key: []byte("c"), Value: []byte("3")}}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write over TLS+SCRAM: %v", err)
	}
	r := stream.NewReader(brokers, "g", "appointments", opts...)
	defer r.Close()
	var got []kafka.Message
	for len(got) < len(msgs) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("group read over TLS+SCRAM: %v", err)
		}
		got = append(got, m)
	}
	if err := r.CommitMessages(ctx, got...); err != nil {
		t.Fatal(err)
	}
	admin := stream.NewAdmin(brokers, opts...)
	defer admin.Close()
	if err := admin.Ping(ctx, "appointments"); err != nil {
		t.Fatalf("admin ping: %v", err)
	}
	lags, err := admin.Lag(ctx, "g", "appointments")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lags {
		if l.Lag != 0 {
			t.Errorf("lag after committing everything: %+v", lags)
		}
	}
	all, err := stream.ReadAll(ctx, brokers, "appointments", opts...)
	if err != nil || len(all) != len(msgs) {
		t.Fatalf("ReadAll: %d messages, %v", len(all), err)
	}

	// Each of these must be refused by the broker or the TLS handshake.
	wrongPW := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongPW, []byte("not-the-password"), 0o600)
	for name, bad := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"wrong password": {args, map[string]string{"KAFKA_SASL_PASSWORD_FILE": wrongPW}},
		"unknown user": {[]string{"--kafka-ca-file", certs.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "mallory"},
			map[string]string{"KAFKA_SASL_PASSWORD": password}},
		"no SASL":         {[]string{"--kafka-ca-file", certs.CAFile}, nil},
		"untrusted CA":    {[]string{"--kafka-tls", "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "scorer"}, map[string]string{"KAFKA_SASL_PASSWORD": password}},
		"plaintext":       {nil, nil},
		"wrong mechanism": {[]string{"--kafka-ca-file", certs.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", "scorer"}, map[string]string{"KAFKA_SASL_PASSWORD": password}},
	} {
		t.Run(name, func(t *testing.T) {
			opts, err := kafkaFrom(t, bad.args, bad.env)
			if err != nil {
				t.Fatal(err)
			}
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			admin := stream.NewAdmin(brokers, opts...)
			defer admin.Close()
			if err := admin.Ping(actx, "appointments"); err == nil {
				t.Fatal("the broker answered")
			}
			w := stream.NewWriter(brokers, "appointments", opts...)
			w.MaxAttempts = 1
			defer w.Close()
			if err := w.WriteMessages(actx, kafka.Message{Value: []byte("x")}); err == nil {
				t.Fatal("write accepted")
			}
		})
	}
}

// Mutual TLS: a broker that requires a client certificate accepts the one configured with
// --kafka-cert-file/--kafka-key-file and refuses a client without one.
func TestKafkaMutualTLS(t *testing.T) {
	certs := testenv.NewCerts(t)
	server := certs.Server.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(server), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	with, err := kafkaFrom(t, []string{"--kafka-ca-file", certs.CAFile, "--kafka-cert-file", certs.ClientCertFile, "--kafka-key-file", certs.ClientKeyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := stream.NewAdmin(c.ListenAddrs(), with...)
	defer a.Close()
	if err := a.Ping(ctx, "t"); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	without, _ := kafkaFrom(t, []string{"--kafka-ca-file", certs.CAFile}, nil)
	b := stream.NewAdmin(c.ListenAddrs(), without...)
	defer b.Close()
	sctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if err := b.Ping(sctx, "t"); err == nil {
		t.Fatal("a client without a certificate was let in")
	}
}

func redisFrom(t *testing.T, addr string, args []string, env map[string]string) (redis.UniversalClient, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e := envflag.Env{}
	var r secconfig.Redis
	r.Register(fs, e)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(fs, envOf(env)); err != nil {
		return nil, err
	}
	o := redis.UniversalOptions{Addrs: []string{addr}, MaxRetries: -1, DialTimeout: 3 * time.Second}
	if err := r.Apply(&o, envOf(env)); err != nil {
		return nil, err
	}
	c := redis.NewUniversalClient(&o)
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// A real redis-server that speaks only TLS, requires client certificates and has no default
// user: the feature store works through an ACL user whose password comes from a file, and
// every wrong setting is refused by the server.
func TestRedisTLSAndACLAgainstRedisServer(t *testing.T) {
	certs := testenv.NewCerts(t)
	port := testenv.FreePort(t)
	testenv.StartRedisServer(t, port, fmt.Sprintf(`port 0
tls-port %d
tls-cert-file %s
tls-key-file %s
tls-ca-cert-file %s
tls-auth-clients yes
user default off
user scorer on >%s ~dna:* &* +@all
`, port, certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile, password))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pwFile := filepath.Join(t.TempDir(), "redis-password")
	os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
	tlsArgs := []string{"--redis-ca-file", certs.CAFile, "--redis-cert-file", certs.ClientCertFile, "--redis-key-file", certs.ClientKeyFile}
	good := append(append([]string{}, tlsArgs...), "--redis-username", "scorer", "--redis-password-file", pwFile)

	rdb, err := redisFrom(t, addr, good, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{})
	patient := strings.Repeat("ab", 32)
	h := &featurestore.History{}
	booked := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	ev := events.Appointment{Schema: events.AppointmentSchema, EventID: "e1", Type: events.Booked, EventTime: booked,
		AppointmentID: "A1", Version: 1, Patient: patient, Booking: &events.Booking{Specialty: "110", Start: booked.Add(72 * time.Hour), BookedAt: booked, AgeBand: "30-39"}}
	h.Apply(&ev, featurestore.Policy{})
	if err := store.Save(ctx, map[string]*featurestore.History{patient: h}); err != nil {
		t.Fatalf("save over TLS as ACL user: %v", err)
	}
	got, err := store.Load(ctx, []string{patient})
	if err != nil || got[patient].LatestVersion("A1") != 1 {
		t.Fatalf("load over TLS as ACL user: %v %+v", err, got)
	}
	if err := rdb.Set(ctx, "other:key", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("a key outside the user's ACL pattern: err = %v, want NOPERM (is the ACL user in use?)", err)
	}

	wrongPW := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongPW, []byte("not-the-password"), 0o600)
	for name, bad := range map[string]struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		"wrong password":    {append(append([]string{}, tlsArgs...), "--redis-username", "scorer", "--redis-password-file", wrongPW), nil, "WRONGPASS"},
		"default user":      {tlsArgs, map[string]string{"REDIS_PASSWORD": password}, "WRONGPASS"},
		"no credentials":    {tlsArgs, nil, "NOAUTH"},
		"plaintext":         {[]string{"--redis-username", "scorer"}, map[string]string{"REDIS_PASSWORD": password}, ""},
		"untrusted CA":      {[]string{"--redis-tls", "--redis-cert-file", certs.ClientCertFile, "--redis-key-file", certs.ClientKeyFile, "--redis-username", "scorer"}, map[string]string{"REDIS_PASSWORD": password}, "certificate"},
		"no client cert":    {[]string{"--redis-ca-file", certs.CAFile, "--redis-username", "scorer"}, map[string]string{"REDIS_PASSWORD": password}, ""},
		"wrong server name": {append(append([]string{}, good...), "--redis-tls-server-name", "redis.example"), nil, "certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := redisFrom(t, addr, bad.args, bad.env)
			if err != nil {
				t.Fatal(err)
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err = c.Get(pctx, "dna:x").Err()
			if err == nil || errors.Is(err, redis.Nil) {
				t.Fatalf("the server answered: %v", err)
			}
			if bad.wantErr != "" && !strings.Contains(err.Error(), bad.wantErr) {
				t.Fatalf("err = %v, want %q", err, bad.wantErr)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
	if _, err := redisFrom(t, addr, []string{"--redis-username", "scorer"}, nil); err == nil {
		t.Fatal("a Redis user without a password was accepted")
	}
}
