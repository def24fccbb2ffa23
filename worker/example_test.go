package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker"
)

// errNoCNAME is what a DNS check returns; ExcType is the exc_type the Django
// side sees in the FAILURE result.
type errNoCNAME struct{ domain string }

func (e *errNoCNAME) Error() string   { return e.domain + " does not CNAME to custom.example.cloud" }
func (e *errNoCNAME) ExcType() string { return "DNSNotVerified" }

// The worker API: register handlers by Celery task name on a ServeMux, add
// middleware, run a Server until SIGTERM.
func Example() {
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux) // certmgr.ping -> "pong"

	// Middleware sees every task, as net/http middleware sees every request.
	mux.Use(func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) error {
			t.Logger().Debug().Msg("task starting")
			return next.ProcessTask(ctx, t)
		})
	})

	mux.HandleFunc("tenant.tasks.verify_custom_domain_dns_task", func(ctx context.Context, t *worker.Task) error {
		var id int64
		if err := t.Arg(0, &id); err != nil {
			return err // FAILURE, exc_type TypeError
		}
		domain := fmt.Sprintf("domain-%d.example.com", id)
		if id == 0 {
			// FAILURE with exc_type DNSNotVerified.
			return &errNoCNAME{domain: domain}
		}
		if id < 0 {
			// Re-sent in 5 minutes with retries+1, like Celery's Task.retry.
			return fmt.Errorf("%w: resolver timed out", worker.RetryAfter(5*time.Minute))
		}
		t.SetResult(map[string]any{"domain": domain, "status": "dns_verified", "dns_ok": true, "detail": ""})
		return nil
	})

	srv, err := worker.NewServer(worker.Config{
		BrokerURL:   os.Getenv("CELERY_BROKER_URL"), // default redis://localhost:6379/0
		Queue:       "certmgr",
		Concurrency: 4,
		Logger:      zerolog.New(os.Stderr),
	}, mux)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	_ = srv.Run // srv.Run(ctx) blocks until SIGTERM, then stops gracefully.
	_ = ctx

	// Handlers can be called directly in tests of their own.
	t, _ := worker.NewTask("tenant.tasks.verify_custom_domain_dns_task", []any{0}, nil)
	err = mux.ProcessTask(context.Background(), t)
	var typed worker.ExcTyper
	fmt.Println(errors.As(err, &typed), typed.ExcType())
	// Output: true DNSNotVerified
}
