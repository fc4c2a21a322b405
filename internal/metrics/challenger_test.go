package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/scorer"
)

// Shadow events count by the challenger's band, apart from the champion's risk events; the
// info gauge names the challenger, and has no series once it is removed.
func TestChallengerMetrics(t *testing.T) {
	m := metrics.New()
	ev := &events.Appointment{Patient: strings.Repeat("a", 64)}
	m.SetChallenger("c1")
	m.SetChallenger("c2")
	m.ChallengerReload(true)
	m.ChallengerReload(false)
	m.BatchDone(&scorer.BatchReport{
		Source: "appointments", Messages: 1,
		Published: map[string]int{"risk": 1, "risk.shadow": 1},
		Scores:    []scorer.Score{{Event: ev, Probability: 0.05, Band: "low", ModelID: "champ"}},
		Shadow:    []scorer.Score{{Event: ev, Probability: 0.4, Band: "very_high", ModelID: "c2"}},
	})
	want := `
# HELP dnarisk_challenger_model_info 1 for the shadow challenger currently scoring (its risk events go to the shadow topic; nothing acts on them), labelled with its id; no series without a challenger.
# TYPE dnarisk_challenger_model_info gauge
dnarisk_challenger_model_info{model_id="c2"} 1
# HELP dnarisk_challenger_reloads_total Challenger model directory changes seen: loaded (now shadowing) or refused (the previous challenger kept shadowing).
# TYPE dnarisk_challenger_reloads_total counter
dnarisk_challenger_reloads_total{result="loaded"} 1
dnarisk_challenger_reloads_total{result="refused"} 1
# HELP dnarisk_shadow_events_total Challenger risk events published to the shadow topic, by the challenger's risk band; nothing downstream acts on them.
# TYPE dnarisk_shadow_events_total counter
dnarisk_shadow_events_total{band="very_high"} 1
# HELP dnarisk_risk_events_total Risk events published, by risk band.
# TYPE dnarisk_risk_events_total counter
dnarisk_risk_events_total{band="low"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), metrics.ChallengerInfo, metrics.ChallengerReloads,
		metrics.ShadowEvents, metrics.RiskEvents); err != nil {
		t.Fatal(err)
	}
	m.SetChallenger("")
	if n := testutil.CollectAndCount(m.Registry, metrics.ChallengerInfo); n != 0 {
		t.Fatalf("%d challenger info series after removing it", n)
	}
}
