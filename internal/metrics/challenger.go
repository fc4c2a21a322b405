package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhsx/dnarisk/scorer"
)

// Metric names of the shadow challenger (scorer.Config.Challenger): its model, its reloads
// and the events it published to the shadow topic.
const (
	ChallengerInfo    = Namespace + "_challenger_model_info"
	ChallengerReloads = Namespace + "_challenger_reloads_total"
	ShadowEvents      = Namespace + "_shadow_events_total"
)

// challenger holds the challenger's collectors; they are registered with the rest, and have
// no series until a challenger is set.
type challenger struct {
	info    *prometheus.GaugeVec
	reloads *prometheus.CounterVec
	shadow  *prometheus.CounterVec
}

func newChallenger() challenger {
	return challenger{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ChallengerInfo,
			Help: "1 for the shadow challenger currently scoring (its risk events go to the shadow topic; nothing acts on them), labelled with its id; no series without a challenger."}, []string{"model_id"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ChallengerReloads,
			Help: "Challenger model directory changes seen: loaded (now shadowing) or refused (the previous challenger kept shadowing)."}, []string{"result"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ShadowEvents,
			Help: "Challenger risk events published to the shadow topic, by the challenger's risk band; nothing downstream acts on them."}, []string{"band"}),
	}
}

func (c challenger) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.info, c.reloads, c.shadow}
}

// batchDone counts a completed batch's shadow events.
func (c challenger) batchDone(r *scorer.BatchReport) {
	for i := range r.Shadow {
		c.shadow.WithLabelValues(r.Shadow[i].Band).Inc()
	}
}

// SetChallenger records the challenger now shadowing; "" records that there is none. The
// previous one's info series is removed.
func (m *Metrics) SetChallenger(id string) {
	m.challenger.info.Reset()
	if id != "" {
		m.challenger.info.WithLabelValues(id).Set(1)
	}
}

// ChallengerReload counts a challenger directory change: loaded or refused.
func (m *Metrics) ChallengerReload(loaded bool) {
	if loaded {
		m.challenger.reloads.WithLabelValues("loaded").Inc()
	} else {
		m.challenger.reloads.WithLabelValues("refused").Inc()
	}
}
