// Package secconfig turns a command's security settings (flags and environment) into what
// the clients need: TLS configurations, a SASL/SCRAM mechanism for Kafka, and TLS, an ACL
// user and a password for Redis. Secrets come from a file (preferred: a mounted Kubernetes or
// Docker secret) or an environment variable, never from a flag (flags show in ps), and are
// held in a Secret, which prints as [redacted] in logs, errors and JSON.
package secconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/stream"
)

// Secret is a credential. Every way of printing it (fmt verbs, slog, encoding/json) prints
// "[redacted]"; Reveal returns the value for the one place that needs it.
type Secret struct{ v string }

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no secret was given.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string               { return redacted }
func (s Secret) Format(f fmt.State, _ rune)   { f.Write([]byte(redacted)) }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// maxSecretBytes bounds a secret file: anything larger is the wrong file.
const maxSecretBytes = 64 << 10

// ReadSecret reads the secret called name: from the file named by the variable name+"_FILE"
// (or by file, when the command was given one with a flag), or else from the variable name
// itself. A trailing newline in a file is dropped. Neither set returns the zero Secret;
// both set is an error, since it is unclear which one the operator meant.
func ReadSecret(lookup func(string) (string, bool), name, file string) (Secret, error) {
	if file == "" {
		file, _ = lookup(name + "_FILE")
	}
	direct, _ := lookup(name)
	switch {
	case file != "" && direct != "":
		return Secret{}, fmt.Errorf("both %s_FILE (or its flag) and %s are set: use one", name, name)
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return Secret{}, fmt.Errorf("%s_FILE: %w", name, err)
		}
		if fi.Size() > maxSecretBytes {
			return Secret{}, fmt.Errorf("%s_FILE %s is %d bytes: not a secret file", name, file, fi.Size())
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return Secret{}, fmt.Errorf("%s_FILE: %w", name, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return Secret{}, fmt.Errorf("%s_FILE %s is empty", name, file)
		}
		return Secret{v}, nil
	}
	return Secret{direct}, nil
}

// TLS names the files of one TLS client configuration.
type TLS struct {
	// Enabled turns TLS on; a CA file turns it on too.
	Enabled bool
	// CAFile is a PEM bundle of the CAs to trust instead of the system's. Optional.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key (PEM) for mutual TLS; both or
	// neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate (default: the host
	// dialled).
	ServerName string
}

func (t *TLS) register(fs *flag.FlagSet, env envflag.Env, prefix, envPrefix, what string) {
	add := func(name, variable string) { env[prefix+name] = envPrefix + variable }
	fs.BoolVar(&t.Enabled, prefix+"tls", false, "connect to "+what+" with TLS")
	add("tls", "TLS")
	fs.StringVar(&t.CAFile, prefix+"ca-file", "", "PEM file of CAs to trust for "+what+" (implies TLS; default: the system's)")
	add("ca-file", "CA_FILE")
	fs.StringVar(&t.CertFile, prefix+"cert-file", "", "client certificate (PEM) for mutual TLS with "+what)
	add("cert-file", "CERT_FILE")
	fs.StringVar(&t.KeyFile, prefix+"key-file", "", "client private key (PEM) for mutual TLS with "+what)
	add("key-file", "KEY_FILE")
	fs.StringVar(&t.ServerName, prefix+"tls-server-name", "", "name to verify in "+what+"'s certificate (default: the host dialled)")
	add("tls-server-name", "TLS_SERVER_NAME")
}

// Config returns the TLS configuration, or nil when TLS is off. Certificates are always
// verified; there is no switch to turn that off.
func (t TLS) Config() (*tls.Config, error) {
	on := t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
	if !on {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, errors.New("a client certificate needs both the cert file and the key file")
	}
	return c, nil
}

// SASL mechanisms Kafka accepts here. SCRAM only: PLAIN sends the password itself.
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Kafka is how to reach Kafka securely.
type Kafka struct {
	TLS TLS
	// SASLMechanism is "" (none), SCRAM-SHA-256 or SCRAM-SHA-512.
	SASLMechanism string
	SASLUser      string
	// SASLPasswordFile names the file holding the password (or KAFKA_SASL_PASSWORD_FILE).
	SASLPasswordFile string
}

// Register adds the Kafka security flags to fs and their variables to env.
func (k *Kafka) Register(fs *flag.FlagSet, env envflag.Env) {
	k.TLS.register(fs, env, "kafka-", "KAFKA_", "Kafka")
	fs.StringVar(&k.SASLMechanism, "kafka-sasl-mechanism", "", "SASL mechanism for Kafka: SCRAM-SHA-256 or SCRAM-SHA-512 (default: none)")
	env["kafka-sasl-mechanism"] = "KAFKA_SASL_MECHANISM"
	fs.StringVar(&k.SASLUser, "kafka-sasl-username", "", "SASL user for Kafka")
	env["kafka-sasl-username"] = "KAFKA_SASL_USERNAME"
	fs.StringVar(&k.SASLPasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password for Kafka (or set KAFKA_SASL_PASSWORD)")
	env["kafka-sasl-password-file"] = "KAFKA_SASL_PASSWORD_FILE"
}

// Options returns the stream options for these settings, reading the password with lookup
// (os.LookupEnv outside tests).
func (k *Kafka) Options(lookup func(string) (string, bool)) ([]stream.Option, error) {
	var opts []stream.Option
	tc, err := k.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka TLS: %w", err)
	}
	if tc != nil {
		opts = append(opts, stream.WithTLS(tc))
	}
	pw, err := ReadSecret(lookup, "KAFKA_SASL_PASSWORD", k.SASLPasswordFile)
	if err != nil {
		return nil, err
	}
	var algo scram.Algorithm
	switch strings.ToUpper(k.SASLMechanism) {
	case "", "NONE":
		if k.SASLUser != "" || !pw.IsZero() {
			return nil, errors.New("a kafka SASL user or password is set but --kafka-sasl-mechanism is not")
		}
		return opts, nil
	case ScramSHA256:
		algo = scram.SHA256
	case ScramSHA512:
		algo = scram.SHA512
	default:
		return nil, fmt.Errorf("--kafka-sasl-mechanism %q: want %s or %s", k.SASLMechanism, ScramSHA256, ScramSHA512)
	}
	if k.SASLUser == "" || pw.IsZero() {
		return nil, fmt.Errorf("kafka SASL %s needs --kafka-sasl-username and a password (KAFKA_SASL_PASSWORD_FILE or KAFKA_SASL_PASSWORD)", k.SASLMechanism)
	}
	if tc == nil {
		return nil, errors.New("kafka SASL without TLS would send the session in clear: set --kafka-tls")
	}
	mech, err := scram.Mechanism(algo, k.SASLUser, pw.Reveal())
	if err != nil {
		return nil, fmt.Errorf("kafka SASL: %w", err)
	}
	return append(opts, stream.WithSASL(mech)), nil
}

// Redis is how to reach Redis securely.
type Redis struct {
	TLS TLS
	// User is the Redis ACL user (Redis 6+); empty means the default user.
	User string
	// PasswordFile names the file holding the password (or REDIS_PASSWORD_FILE).
	PasswordFile string
}

// Register adds the Redis security flags to fs and their variables to env.
func (r *Redis) Register(fs *flag.FlagSet, env envflag.Env) {
	r.TLS.register(fs, env, "redis-", "REDIS_", "Redis")
	fs.StringVar(&r.User, "redis-username", "", "Redis ACL user (default: the default user)")
	env["redis-username"] = "REDIS_USERNAME"
	fs.StringVar(&r.PasswordFile, "redis-password-file", "", "file holding the Redis password (or set REDIS_PASSWORD)")
	env["redis-password-file"] = "REDIS_PASSWORD_FILE"
}

// Apply sets the TLS configuration and credentials on o, reading the password with lookup.
func (r *Redis) Apply(o *redis.UniversalOptions, lookup func(string) (string, bool)) error {
	tc, err := r.TLS.Config()
	if err != nil {
		return fmt.Errorf("redis TLS: %w", err)
	}
	pw, err := ReadSecret(lookup, "REDIS_PASSWORD", r.PasswordFile)
	if err != nil {
		return err
	}
	if r.User != "" && pw.IsZero() {
		return fmt.Errorf("redis user %q has no password: set REDIS_PASSWORD_FILE or REDIS_PASSWORD", r.User)
	}
	o.TLSConfig = tc
	o.Username = r.User
	o.Password = pw.Reveal()
	return nil
}
