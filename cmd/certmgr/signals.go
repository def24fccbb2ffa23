package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// signalContext is cancelled on SIGTERM or SIGINT: the worker then stops
// fetching and gives in-flight tasks their grace period. A second SIGTERM
// or SIGINT ends the process at once, as Celery's second Ctrl-C does (a
// cold shutdown): the messages it holds stay unacknowledged and come back
// after the visibility timeout. stop restores the default handling.
func signalContext() (ctx context.Context, stop context.CancelFunc) {
	return notifyTwice(func(sig os.Signal) {
		fmt.Fprintf(os.Stderr, "certmgr: second %s: exiting at once; held messages come back after the visibility timeout\n", sig)
		os.Exit(1)
	})
}

// notifyTwice cancels ctx on the first SIGTERM or SIGINT and calls second on
// the next one.
func notifyTwice(second func(os.Signal)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-stopped:
			return
		}
		select {
		case sig := <-ch:
			second(sig)
		case <-stopped:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(stopped)
			cancel()
		})
	}
}
