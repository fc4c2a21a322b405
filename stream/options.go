package stream

import (
	"crypto/tls"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// Option says how to reach Kafka: TLS, SASL. Every constructor here that talks to Kafka
// (NewWriter, NewReader, NewAdmin, ReadAll) takes the same options, so a command builds them
// once from its configuration (package secconfig) and hands them to all of them.
type Option func(*connOptions)

type connOptions struct {
	tls  *tls.Config
	sasl sasl.Mechanism
}

// WithTLS encrypts every connection to Kafka with c (nil: plaintext). Set c.RootCAs to trust
// a private CA and c.Certificates for mutual TLS.
func WithTLS(c *tls.Config) Option { return func(o *connOptions) { o.tls = c } }

// WithSASL authenticates every connection with m (nil: none), for example a SCRAM mechanism
// from github.com/segmentio/kafka-go/sasl/scram. Use it with WithTLS: SASL/SCRAM proves who
// the client is but does not encrypt what follows.
func WithSASL(m sasl.Mechanism) Option { return func(o *connOptions) { o.sasl = m } }

func applyOptions(opts []Option) connOptions {
	var o connOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// dialTimeout matches kafka-go's DefaultDialer; it bounds the TCP connect, TLS handshake and
// SASL exchange together.
const dialTimeout = 10 * time.Second

func (o connOptions) dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: dialTimeout, DualStack: true, TLS: o.tls, SASLMechanism: o.sasl}
}

// transport returns a fresh Transport (see NewWriter for why it is never shared).
func (o connOptions) transport() *kafka.Transport {
	return &kafka.Transport{
		DialTimeout: dialTimeout,
		MetadataTTL: 10 * time.Second,
		TLS:         o.tls,
		SASL:        o.sasl,
	}
}
