package main

import (
	"context"
	"os/signal"
	"syscall"
)

// signalContext is cancelled on SIGTERM or SIGINT: the worker then stops
// fetching and gives in-flight tasks their grace period.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}
