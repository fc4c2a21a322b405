package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Gateway metric names.
const (
	GatewayMessages = Namespace + "_gateway_messages_total"
	GatewayRefusals = Namespace + "_gateway_refusals_total"
	GatewayKafkaAck = Namespace + "_gateway_kafka_ack_seconds"
)

// Gateway holds the PAS gateway's collectors on their own registry.
type Gateway struct {
	Registry *prometheus.Registry
	messages *prometheus.CounterVec
	refusals *prometheus.CounterVec
	kafkaAck *prometheus.HistogramVec
}

// triggers are the label values a trigger may take; anything else (a sender can put any
// text in MSH-9) is counted as "other", so a sender cannot grow the series without bound.
var triggers = map[string]bool{"S12": true, "S13": true, "S14": true, "S15": true, "S17": true, "S26": true,
	"create": true, "update": true, "bundle": true}

// NewGateway returns the gateway's collectors with the Go runtime and process collectors.
func NewGateway() *Gateway {
	g := &Gateway{
		Registry: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: GatewayMessages,
			Help: "Messages answered, by protocol (mllp, fhir), trigger (S12..S26; FHIR create, update, bundle; other) and code (AA, AE, AR; the HTTP status)."},
			[]string{"protocol", "trigger", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: GatewayRefusals,
			Help: "Messages and connections refused, by protocol and reason."}, []string{"protocol", "reason"}),
		kafkaAck: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: GatewayKafkaAck,
			Help:    "Time from handing an event to Kafka until all in-sync replicas acknowledged it (result ok or error).",
			Buckets: prometheus.ExponentialBucketsRange(0.001, 30, 16)}, []string{"result"}),
	}
	g.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		g.messages, g.refusals, g.kafkaAck)
	return g
}

// Message counts one answered message.
func (g *Gateway) Message(protocol, trigger, code string) {
	if !triggers[trigger] {
		trigger = "other"
	}
	g.messages.WithLabelValues(protocol, trigger, code).Inc()
}

// Refused counts one refusal; reason is one of a fixed set the caller owns.
func (g *Gateway) Refused(protocol, reason string) {
	g.refusals.WithLabelValues(protocol, reason).Inc()
}

// KafkaAck records one write to Kafka.
func (g *Gateway) KafkaAck(d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	g.kafkaAck.WithLabelValues(result).Observe(d.Seconds())
}
