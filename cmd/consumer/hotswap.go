package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

// watchModelDir polls the model directory every interval (0: never) and swaps each new model
// that loads into proc, without a restart and without losing or re-scoring an event: the
// Processor takes the new model at its next batch, and a batch finishes with the model it
// started with, so each risk event names the model that scored it. A directory that does not
// load (truncated or half-copied files, a contract that does not match the model, ...) is
// refused with one log line per distinct content, and the current model keeps serving; a
// later fix is picked up. current is the model loaded at start-up, so a change made while the
// consumer was starting is not missed. notify, if not nil, hears of every swap (err nil) and
// every refusal, after it is logged. A model that loads but needs a booking extra feed does
// not fill is refused the same way.
func watchModelDir(ctx context.Context, dir string, interval time.Duration, feed scoring.LiveFeed, current *scoring.Model, proc *scorer.Processor, log *slog.Logger, notify func(next *scoring.Model, err error)) {
	if interval <= 0 {
		return
	}
	log.Info("watching the model directory for new models", "dir", dir, "interval", interval.String())
	refuse := func(err error) {
		log.Error("new model refused; keeping the current model", "dir", dir, "current_model_id", proc.Model().ID(), "err", err)
		if notify != nil {
			notify(nil, err)
		}
	}
	scoring.Watch(ctx, dir, interval, current,
		func(next *scoring.Model) {
			if err := feed.Check(next); err != nil {
				refuse(err)
				return
			}
			prev, _ := proc.Model().(*scoring.Model)
			if prev != nil && prev.Digest() == next.Digest() {
				return // already serving it (a SIGHUP reload got there first)
			}
			proc.SetModel(next)
			attrs := []any{"model_id", next.ID(), "dir", dir, "trigger", "file change", "calibrated", next.Calibrated()}
			if prev != nil {
				attrs = append(attrs, "previous_model_id", prev.ID())
			}
			log.Info("model swapped", attrs...)
			if notify != nil {
				notify(next, nil)
			}
		},
		refuse)
}
