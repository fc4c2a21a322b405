package ops

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nhsx/dnarisk/internal/metrics"
)

// Listener is one of the gateway's listeners as its page shows it.
type Listener struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Security string `json:"security"`
}

// GatewayStatus is the PAS gateway's status page: what it answered, by protocol, trigger and
// acknowledgement code, what it refused and why, and how long Kafka took to acknowledge,
// all read from its metrics, so the page and /metrics agree.
type GatewayStatus struct {
	metrics   prometheus.Gatherer
	listeners []Listener
	started   time.Time
	loc       *time.Location
}

// NewGatewayStatus returns the page for a gateway whose collectors are on g.
func NewGatewayStatus(g prometheus.Gatherer, listeners []Listener) *GatewayStatus {
	return &GatewayStatus{metrics: g, listeners: listeners, started: time.Now(), loc: london}
}

// GatewayData is what the page shows; /status.json serves it as is.
type GatewayData struct {
	GeneratedAt time.Time    `json:"generated_at"`
	UptimeS     float64      `json:"uptime_s"`
	Listeners   []Listener   `json:"listeners"`
	Messages    int64        `json:"messages"`
	Accepted    int64        `json:"accepted"`
	Refused     int64        `json:"refused"`
	ByTrigger   []MessageRow `json:"by_trigger"`
	Refusals    []RefusalRow `json:"refusals"`
	// Kafka acknowledgements: how many, their mean and the bucket bound under which 95% fell.
	KafkaAcks   int64   `json:"kafka_acks"`
	KafkaErrors int64   `json:"kafka_errors"`
	KafkaMeanMS float64 `json:"kafka_ack_mean_ms"`
	KafkaP95MS  float64 `json:"kafka_ack_p95_ms"`
}

// MessageRow is one protocol, trigger and answer code.
type MessageRow struct {
	Protocol string `json:"protocol"`
	Trigger  string `json:"trigger"`
	Code     string `json:"code"`
	Count    int64  `json:"count"`
}

// RefusalRow is one protocol and reason.
type RefusalRow struct {
	Protocol string `json:"protocol"`
	Reason   string `json:"reason"`
	Count    int64  `json:"count"`
}

func accepted(code string) bool {
	n, err := strconv.Atoi(code)
	return code == "AA" || code == "CA" || err == nil && n < 300
}

// Data gathers what the page shows now.
func (s *GatewayStatus) Data() (GatewayData, error) {
	now := time.Now()
	d := GatewayData{GeneratedAt: now.UTC(), UptimeS: now.Sub(s.started).Seconds(), Listeners: s.listeners,
		ByTrigger: []MessageRow{}, Refusals: []RefusalRow{}}
	fams, err := s.metrics.Gather()
	if err != nil {
		return d, fmt.Errorf("gather metrics: %w", err)
	}
	for _, f := range fams {
		switch f.GetName() {
		case metrics.GatewayMessages:
			for _, m := range f.GetMetric() {
				r := MessageRow{label(m, "protocol"), label(m, "trigger"), label(m, "code"), int64(m.GetCounter().GetValue())}
				d.ByTrigger = append(d.ByTrigger, r)
				d.Messages += r.Count
				if accepted(r.Code) {
					d.Accepted += r.Count
				}
			}
		case metrics.GatewayRefusals:
			for _, m := range f.GetMetric() {
				r := RefusalRow{label(m, "protocol"), label(m, "reason"), int64(m.GetCounter().GetValue())}
				d.Refusals = append(d.Refusals, r)
				d.Refused += r.Count
			}
		case metrics.GatewayKafkaAck:
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				if label(m, "result") == "error" {
					d.KafkaErrors += int64(h.GetSampleCount())
					continue
				}
				d.KafkaAcks = int64(h.GetSampleCount())
				if h.GetSampleCount() > 0 {
					d.KafkaMeanMS = 1000 * h.GetSampleSum() / float64(h.GetSampleCount())
					d.KafkaP95MS = 1000 * quantileBound(h, 0.95)
				}
			}
		}
	}
	sort.Slice(d.ByTrigger, func(i, j int) bool {
		a, b := d.ByTrigger[i], d.ByTrigger[j]
		return a.Protocol+a.Trigger+a.Code < b.Protocol+b.Trigger+b.Code
	})
	sort.Slice(d.Refusals, func(i, j int) bool { return d.Refusals[i].Count > d.Refusals[j].Count })
	return d, nil
}

// quantileBound is the upper bound of the first bucket holding quantile q of the samples.
func quantileBound(h *dto.Histogram, q float64) float64 {
	want := uint64(math.Ceil(q * float64(h.GetSampleCount())))
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() >= want {
			return b.GetUpperBound()
		}
	}
	return math.Inf(1)
}

//go:embed gateway.html
var gatewayHTML string

var gatewayTmpl = template.Must(template.New("gateway").Funcs(template.FuncMap{
	"f": func(digits int, x float64) string { return fmt.Sprintf("%.*f", digits, x) },
}).Parse(gatewayHTML))

type gatewayView struct {
	GatewayData
	Loc *time.Location
}

func (v gatewayView) Clock(t time.Time) string { return t.In(v.Loc).Format("15:04:05") }
func (v gatewayView) Uptime() string {
	return (time.Duration(v.UptimeS) * time.Second).String()
}

// ServeHTTP renders the page; like the scorer's it refreshes every 5 s and loads nothing else.
func (s *GatewayStatus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, err := s.Data()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pageHeaders(w.Header())
	if err := gatewayTmpl.Execute(w, gatewayView{d, s.loc}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// ServeJSON serves Data as /status.json.
func (s *GatewayStatus) ServeJSON(w http.ResponseWriter, r *http.Request) {
	d, err := s.Data()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(d)
}
