package ops

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

// ReminderCounter reports today's reminders. The reminder dispatcher provides one; without it
// the page says "reminders: not connected".
type ReminderCounter interface {
	RemindersToday(ctx context.Context) (ReminderCounts, error)
}

// ReminderCounts are one day's reminders by outcome.
type ReminderCounts struct {
	Sent      int64 `json:"sent"`
	Failed    int64 `json:"failed"`
	Cancelled int64 `json:"cancelled"`
}

// StatusConfig configures a Status.
type StatusConfig struct {
	// Title heads the page. Default "DNA risk scorer".
	Title string
	// Metrics is read for every total the page shows, so the page and /metrics agree.
	Metrics prometheus.Gatherer
	// Model returns the model serving now. Required.
	Model func() *scoring.Model
	// ModelDir holds the serving model's card.json (read on each view; optional).
	ModelDir string
	// Reminders, when set, fills the reminders panel.
	Reminders ReminderCounter
	// Monitor, when set, fills the live model performance panel.
	Monitor MonitorSource
	// HighBands are the risk bands listed as high risk. Default high and very_high.
	HighBands []string
	// Recent is how many high-risk bookings to list. Default 15.
	Recent int
	// Location shows times in the clinic's zone. Default Europe/London.
	Location *time.Location
}

// Status is the status page. It is a scorer.Observer (for throughput and the list of recent
// high-risk bookings) and an http.Handler.
type Status struct {
	c       StatusConfig
	high    map[string]bool
	started time.Time

	mu      sync.Mutex
	samples []sample   // completed batches in the last minute
	recent  []HighRisk // newest last, at most c.Recent
}

type sample struct {
	at            time.Time
	events, risks int
}

// HighRisk is one recently scored high-risk booking, as the page shows it: the patient only
// as the first characters of the pseudonym.
type HighRisk struct {
	ScoredAt    time.Time `json:"scored_at"`
	Patient     string    `json:"patient"`
	Start       time.Time `json:"appointment_start"`
	Specialty   string    `json:"specialty"`
	Clinic      string    `json:"clinic"`
	FirstVisit  bool      `json:"first_visit"`
	Band        string    `json:"band"`
	Probability float64   `json:"probability"`
}

// pseudonymShown is how much of a pseudonym the page shows: enough to tell rows apart, far
// too little to look a patient up by.
const pseudonymShown = 8

// NewStatus returns a Status.
func NewStatus(c StatusConfig) *Status {
	if c.Title == "" {
		c.Title = "DNA risk scorer"
	}
	if len(c.HighBands) == 0 {
		c.HighBands = []string{"high", "very_high"}
	}
	if c.Recent <= 0 {
		c.Recent = 15
	}
	if c.Location == nil {
		c.Location = london
	}
	s := &Status{c: c, high: map[string]bool{}, started: time.Now()}
	for _, b := range c.HighBands {
		s.high[b] = true
	}
	return s
}

var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		return time.UTC
	}
	return l
}()

// BatchDone implements scorer.Observer.
func (s *Status) BatchDone(r *scorer.BatchReport) {
	now := time.Now()
	var hr []HighRisk
	for i := range r.Scores {
		sc := &r.Scores[i]
		if !s.high[sc.Band] || sc.Event == nil {
			continue
		}
		h := HighRisk{ScoredAt: now, Patient: truncate(sc.Event.Patient), Band: sc.Band, Probability: sc.Probability}
		if b := sc.Event.Booking; b != nil {
			h.Start, h.Specialty, h.Clinic, h.FirstVisit = b.Start, b.Specialty, b.Clinic, b.FirstVisit
		}
		hr = append(hr, h)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, sample{at: now, events: r.Messages, risks: len(r.Scores)})
	s.trim(now)
	s.recent = append(s.recent, hr...)
	if n := len(s.recent) - s.c.Recent; n > 0 {
		s.recent = slices.Delete(s.recent, 0, n)
	}
}

// BatchFailed implements scorer.Observer.
func (s *Status) BatchFailed(int, time.Duration, error) {}

func truncate(pseudonym string) string {
	if len(pseudonym) <= pseudonymShown {
		return pseudonym
	}
	return pseudonym[:pseudonymShown] + "…"
}

// trim drops samples older than the longest window shown. s.mu is held.
func (s *Status) trim(now time.Time) {
	i := 0
	for i < len(s.samples) && now.Sub(s.samples[i].at) > time.Minute {
		i++
	}
	s.samples = slices.Delete(s.samples, 0, i)
}

// rates are events and risk events per second over the last span (or since start, when
// the process is younger than span).
func (s *Status) rates(now time.Time, span time.Duration) (events, risks float64) {
	if up := now.Sub(s.started); up < span {
		span = max(up, time.Second)
	}
	var e, r int
	for _, x := range s.samples {
		if now.Sub(x.at) <= span {
			e += x.events
			r += x.risks
		}
	}
	return float64(e) / span.Seconds(), float64(r) / span.Seconds()
}

// StatusData is what the page shows; /status.json serves it as is.
type StatusData struct {
	Title       string    `json:"title"`
	GeneratedAt time.Time `json:"generated_at"`
	UptimeS     float64   `json:"uptime_s"`
	// Rates per second over the last 10 s and the last minute.
	EventsPerS10s float64 `json:"events_per_s_10s"`
	EventsPerS1m  float64 `json:"events_per_s_1m"`
	RiskPerS1m    float64 `json:"risk_events_per_s_1m"`
	// Totals since the process started, read from the metrics.
	Consumed      int64 `json:"events_consumed"`
	RiskEvents    int64 `json:"risk_events"`
	DeadLettered  int64 `json:"dead_lettered"`
	BatchFailures int64 `json:"batch_failures"`
	// Lag is the consumer group's lag summed over partitions; -1 when not measured.
	Lag       int64           `json:"consumer_lag"`
	Bands     []BandCount     `json:"bands"`
	HighBands []string        `json:"high_bands"`
	Recent    []HighRisk      `json:"recent_high_risk"`
	Reminders *ReminderCounts `json:"reminders_today"`
	// RemindersNote explains an empty Reminders: not connected, or the error.
	RemindersNote string       `json:"reminders_note,omitempty"`
	Model         ModelSummary `json:"model"`
	// Live is the model monitor's view (cmd/monitor); LiveNote explains its absence.
	Live     *LiveModel `json:"live_model,omitempty"`
	LiveNote string     `json:"live_model_note,omitempty"`
}

// BandCount is the number of risk events in one band.
type BandCount struct {
	Name  string  `json:"name"`
	Count int64   `json:"count"`
	Share float64 `json:"share"`
}

// ModelSummary is the serving model and what its card says.
type ModelSummary struct {
	ID        string   `json:"id"`
	TrainedAt string   `json:"trained_at,omitempty"`
	AUC       *float64 `json:"auc,omitempty"`
	ECE       *float64 `json:"ece,omitempty"`
	// CardNote says why the card could not be shown, if it could not.
	CardNote string `json:"card_note,omitempty"`
}

// Data gathers what the page shows now.
func (s *Status) Data(ctx context.Context) (StatusData, error) {
	now := time.Now()
	d := StatusData{Title: s.c.Title, GeneratedAt: now.UTC(), UptimeS: now.Sub(s.started).Seconds(), HighBands: s.c.HighBands, Lag: -1}
	s.mu.Lock()
	s.trim(now)
	d.EventsPerS10s, _ = s.rates(now, 10*time.Second)
	d.EventsPerS1m, d.RiskPerS1m = s.rates(now, time.Minute)
	d.Recent = make([]HighRisk, len(s.recent))
	for i, h := range s.recent {
		d.Recent[len(s.recent)-1-i] = h
	}
	s.mu.Unlock()

	fams, err := s.c.Metrics.Gather()
	if err != nil {
		return d, fmt.Errorf("gather metrics: %w", err)
	}
	bands := map[string]int64{}
	for _, f := range fams {
		switch f.GetName() {
		case metrics.EventsConsumed:
			d.Consumed = sum(f)
		case metrics.EventsDeadLettered:
			d.DeadLettered = sum(f)
		case metrics.BatchFailures:
			d.BatchFailures = sum(f)
		case metrics.ConsumerLag:
			d.Lag = sum(f)
		case metrics.RiskEvents:
			for _, m := range f.GetMetric() {
				bands[label(m, "band")] += int64(m.GetCounter().GetValue())
			}
		}
	}
	model := s.c.Model()
	var order []string
	if model != nil {
		for _, b := range model.Contract().RiskBands {
			order = append(order, b.Name)
		}
	}
	for _, b := range names(bands) { // bands of an earlier model, if it used others
		if !slices.Contains(order, b) {
			order = append(order, b)
		}
	}
	for _, b := range order {
		d.RiskEvents += bands[b]
	}
	for _, b := range order {
		bc := BandCount{Name: b, Count: bands[b]}
		if d.RiskEvents > 0 {
			bc.Share = float64(bc.Count) / float64(d.RiskEvents)
		}
		d.Bands = append(d.Bands, bc)
	}

	if s.c.Reminders == nil {
		d.RemindersNote = "not connected"
	} else if rc, err := s.c.Reminders.RemindersToday(ctx); errors.Is(err, ErrNotConnected) {
		d.RemindersNote = "not connected"
	} else if err != nil {
		d.RemindersNote = "unavailable: " + err.Error()
	} else {
		d.Reminders = &rc
	}
	d.Model = s.modelSummary(model)
	switch rep, err := s.monitorReport(ctx); {
	case s.c.Monitor == nil:
		d.LiveNote = "not connected"
	case err != nil:
		d.LiveNote = "unavailable: " + err.Error()
	case rep == nil || rep.LatestDay == "":
		d.LiveNote = "no outcomes joined to scores yet"
	default:
		d.Live = liveModel(rep)
	}
	return d, nil
}

func (s *Status) monitorReport(ctx context.Context) (*monitor.Report, error) {
	if s.c.Monitor == nil {
		return nil, nil
	}
	return s.c.Monitor.Report(ctx)
}

func sum(f *dto.MetricFamily) int64 {
	var t float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			t += m.GetCounter().GetValue()
		case m.Gauge != nil:
			t += m.GetGauge().GetValue()
		}
	}
	return int64(t)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// card is the part of models/<id>/card.json the page shows.
type card struct {
	ModelID   string   `json:"model_id"`
	TrainedAt string   `json:"trained_at"`
	AUC       *float64 `json:"auc"`
	ECE       *float64 `json:"ece"`
}

func (s *Status) modelSummary(m *scoring.Model) ModelSummary {
	if m == nil {
		return ModelSummary{CardNote: "no model loaded"}
	}
	ms := ModelSummary{ID: m.ID()}
	if s.c.ModelDir == "" {
		ms.CardNote = "no model card configured"
		return ms
	}
	b, err := os.ReadFile(filepath.Join(s.c.ModelDir, "card.json"))
	if err != nil {
		ms.CardNote = "no card.json beside the model"
		return ms
	}
	var c card
	if err := json.Unmarshal(b, &c); err != nil {
		ms.CardNote = "card.json is not valid JSON"
		return ms
	}
	if c.ModelID != m.ID() {
		ms.CardNote = fmt.Sprintf("card.json describes model %q, not the serving one", c.ModelID)
		return ms
	}
	ms.TrainedAt, ms.AUC, ms.ECE = c.TrainedAt, c.AUC, c.ECE
	return ms
}

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct": func(x float64) string { return fmt.Sprintf("%.1f", 100*x) },
	"f":   func(digits int, x float64) string { return fmt.Sprintf("%.*f", digits, x) },
	"deref": func(p *float64) float64 {
		if p == nil {
			return 0
		}
		return *p
	},
}).Parse(statusHTML))

// pageView is StatusData with times formatted in the clinic's zone.
type pageView struct {
	StatusData
	Loc *time.Location
}

func (v pageView) Local(t time.Time) string { return t.In(v.Loc).Format("Mon 2 Jan 15:04") }
func (v pageView) Clock(t time.Time) string { return t.In(v.Loc).Format("15:04:05") }
func (v pageView) Uptime() string {
	return (time.Duration(v.UptimeS) * time.Second).String()
}

// ServeHTTP renders the page. It refreshes itself every 5 seconds and loads nothing else.
func (s *Status) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, err := s.Data(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pageHeaders(w.Header())
	if err := statusTmpl.Execute(w, pageView{d, s.c.Location}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// pageHeaders: a page that loads nothing from elsewhere and is never cached or framed.
func pageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (s *Status) serveJSON(w http.ResponseWriter, r *http.Request) {
	d, err := s.Data(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(d)
}
