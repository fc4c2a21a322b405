package reminders

import (
	"context"

	"github.com/nhsx/dnarisk/stream"
)

// Consume feeds src (a stream.NewGroupReader over the appointments and risk topics) to
// d.Process in batches until ctx ends, with the scorer's loop: a batch is committed only after
// Process has stored everything it implies in Redis, a failing batch is retried with backoff
// (nothing is committed meanwhile), and when ctx ends the batch in hand is finished and
// committed before Consume returns nil.
func Consume(ctx context.Context, src stream.Source, d *Dispatcher, b stream.Batching) error {
	return stream.Run(ctx, src, d, b, d.o.Log)
}
