package main

import (
	"context"
	"errors"
	"log/slog"
)

func runBackpressure(ctx context.Context, cfg config, log *slog.Logger) (bool, error) {
	return false, errors.New("todo")
}
