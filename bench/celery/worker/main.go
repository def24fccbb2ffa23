// Command worker is the certmgr Celery worker with only the built-in tasks
// (certmgr.ping), for bench/celery: it measures the worker layer alone,
// without the database and ACME wiring of `certmgr worker`.
//
//	BENCH_BROKER=redis://127.0.0.1:6379/0 BENCH_CONCURRENCY=4 worker
//	BENCH_BROKER=amqp://guest:guest@127.0.0.1:5672/v BENCH_BACKEND=redis://127.0.0.1:6379/0 worker
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker"
)

func main() {
	conc, _ := strconv.Atoi(os.Getenv("BENCH_CONCURRENCY"))
	prefetch, _ := strconv.Atoi(os.Getenv("BENCH_PREFETCH"))
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	srv, err := worker.NewServer(worker.Config{
		BrokerURL:        os.Getenv("BENCH_BROKER"),
		ResultBackendURL: os.Getenv("BENCH_BACKEND"), // empty: the broker's (bench/rabbitmq sets a Redis)
		Concurrency:      conc,
		Prefetch:         prefetch,
		Hostname:         "certmgr-bench@localhost",
		Logger:           zerolog.New(os.Stderr).Level(zerolog.WarnLevel),
	}, mux)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if path := os.Getenv("BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	_ = srv.Run(ctx)
}
