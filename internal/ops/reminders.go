package ops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/metrics"
)

// ErrNotConnected is what a ReminderCounter returns while no dispatcher reports.
var ErrNotConnected = errors.New("not connected")

// RemindersFrom reads today's reminders from g (the dispatcher's registry, when the
// dispatcher runs in the same process, as in the demo). Until the dispatcher registers its
// counts there it returns ErrNotConnected.
func RemindersFrom(g prometheus.Gatherer) ReminderCounter { return gathererCounter{g} }

type gathererCounter struct{ g prometheus.Gatherer }

func (c gathererCounter) RemindersToday(context.Context) (ReminderCounts, error) {
	fams, err := c.g.Gather()
	if err != nil {
		return ReminderCounts{}, err
	}
	for _, f := range fams {
		if f.GetName() == metrics.RemindersToday {
			return countsOf(f), nil
		}
	}
	return ReminderCounts{}, ErrNotConnected
}

// RemindersFromURL reads today's reminders from the dispatcher's /metrics at url, sending
// the first token of tokenFile as a bearer token when tokenFile is set (read on every call,
// so a rotated token is picked up).
func RemindersFromURL(url, tokenFile string) ReminderCounter {
	return urlCounter{url: url, tokenFile: tokenFile, client: &http.Client{Timeout: 2 * time.Second}}
}

type urlCounter struct {
	url, tokenFile string
	client         *http.Client
}

func (c urlCounter) RemindersToday(ctx context.Context) (ReminderCounts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return ReminderCounts{}, err
	}
	req.Header.Set("Accept", "text/plain")
	if c.tokenFile != "" {
		tok, err := authn.ReadToken(c.tokenFile)
		if err != nil {
			return ReminderCounts{}, fmt.Errorf("dispatcher metrics token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := c.client.Do(req)
	if err != nil {
		return ReminderCounts{}, fmt.Errorf("dispatcher metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return ReminderCounts{}, fmt.Errorf("dispatcher metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		return ReminderCounts{}, fmt.Errorf("dispatcher metrics: %w", err)
	}
	f, ok := fams[metrics.RemindersToday]
	if !ok {
		return ReminderCounts{}, fmt.Errorf("dispatcher metrics have no %s", metrics.RemindersToday)
	}
	return countsOf(f), nil
}

func countsOf(f *dto.MetricFamily) ReminderCounts {
	var rc ReminderCounts
	for _, m := range f.GetMetric() {
		n := int64(m.GetGauge().GetValue())
		switch label(m, "outcome") {
		case "sent":
			rc.Sent = n
		case "failed":
			rc.Failed = n
		case "cancelled":
			rc.Cancelled = n
		}
	}
	return rc
}
