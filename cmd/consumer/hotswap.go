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
//
// A directory swapped whole (cmd/promote exchanges it with a staging directory by rename) is
// seen like any other change: Watch polls the path, not an open directory.
func watchModelDir(ctx context.Context, dir string, interval time.Duration, feed scoring.LiveFeed, current *scoring.Model, proc *scorer.Processor, log *slog.Logger, notify func(next *scoring.Model, err error)) {
	watchDir(ctx, dir, interval, feed, current, modelSlot{role: "model", get: proc.Model, set: func(m *scoring.Model) { proc.SetModel(m) }}, log, notify)
}

// watchChallengerDir is watchModelDir for the shadow challenger (--challenger-model-dir).
func watchChallengerDir(ctx context.Context, dir string, interval time.Duration, feed scoring.LiveFeed, current *scoring.Model, proc *scorer.Processor, log *slog.Logger, notify func(next *scoring.Model, err error)) {
	watchDir(ctx, dir, interval, feed, current, modelSlot{role: "challenger", get: proc.Challenger, set: func(m *scoring.Model) { proc.SetChallenger(m) }}, log, notify)
}

// modelSlot is where a watched directory's model serves: the model or the challenger.
type modelSlot struct {
	role string // in log lines: "model" or "challenger"
	get  func() scorer.Scorer
	set  func(*scoring.Model)
}

func (s modelSlot) currentID() string {
	if m := s.get(); m != nil {
		return m.ID()
	}
	return ""
}

func watchDir(ctx context.Context, dir string, interval time.Duration, feed scoring.LiveFeed, current *scoring.Model, slot modelSlot, log *slog.Logger, notify func(next *scoring.Model, err error)) {
	if interval <= 0 {
		return
	}
	log.Info("watching the "+slot.role+" directory for new models", "dir", dir, "interval", interval.String())
	refuse := func(err error) {
		log.Error("new "+slot.role+" refused; keeping the current "+slot.role, "dir", dir, "current_"+slot.role+"_id", slot.currentID(), "err", err)
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
			prev, _ := slot.get().(*scoring.Model)
			if prev != nil && prev.Digest() == next.Digest() {
				return // already serving it (a SIGHUP reload got there first)
			}
			slot.set(next)
			attrs := []any{"model_id", next.ID(), "dir", dir, "trigger", "file change", "calibrated", next.Calibrated()}
			if prev != nil {
				attrs = append(attrs, "previous_model_id", prev.ID())
			}
			log.Info(slot.role+" swapped", attrs...)
			if notify != nil {
				notify(next, nil)
			}
		},
		refuse)
}
