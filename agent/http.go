package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/midsummer/certmgr/certstore"
)

// ChallengePrefix is the HTTP-01 path (RFC 8555 §8.3).
const ChallengePrefix = "/.well-known/acme-challenge/"

// tokenRE is the base64url alphabet RFC 8555 allows in a token.
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// Handler serves HTTP-01 key authorizations from the store, /healthz,
// /readyz and, when metrics is not nil, /metrics.
func (a *Agent) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(ChallengePrefix, a.serveChallenge)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Ready() {
			a.mu.Lock()
			why := errNotReady.Error()
			if a.lastErr != nil {
				why += ": " + a.lastErr.Error()
			}
			a.mu.Unlock()
			notReady(w, a.cfg.Resumed, why)
			return
		}
		// Once ready, nginx serves its last good configuration whatever
		// the store does: the pod stays in the Service (a database outage
		// must not empty it), and the body says what is wrong.
		a.mu.Lock()
		failing, failures, since, applied := a.lastErr, a.failures, a.failedAt, a.applied
		a.mu.Unlock()
		if failing != nil {
			fmt.Fprintf(w, "ok, serving store version %d; %d syncs failed since %s, the last: %v\n",
				applied, failures, since.UTC().Format(time.RFC3339), failing)
			return
		}
		io.WriteString(w, "ok\n")
	})
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	return mux
}

// notReady answers /readyz before the first sync of this run: ok when
// resumed (nginx serves what an earlier run put live, Config.Resumed),
// else 503; why says what is awaited.
func notReady(w http.ResponseWriter, resumed bool, why string) {
	if resumed {
		fmt.Fprintf(w, "ok, serving the configuration applied before this start; %s\n", why)
		return
	}
	http.Error(w, why, http.StatusServiceUnavailable)
}

// StoreWaitHandler serves while the agent waits for its certificate store,
// before New: /healthz alive, /readyz as before the first sync (resumed as
// in Config.Resumed), everything else 503 (the CA retries an HTTP-01
// validation that got one). why says what is awaited.
func StoreWaitHandler(resumed bool, why func() string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { notReady(w, resumed, why()) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, why(), http.StatusServiceUnavailable)
	})
	return mux
}

func (a *Agent) serveChallenge(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	token := strings.TrimPrefix(r.URL.Path, ChallengePrefix)
	if !tokenRE.MatchString(token) {
		http.NotFound(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ka, err := a.cfg.Store.KeyAuth(ctx, token)
	if errors.Is(err, certstore.ErrNoChallenge) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		// The CA retries a validation that got a server error.
		a.log.Warn().Err(err).Msg("http-01 challenge not answered: store unreachable")
		http.Error(w, "certificate store unreachable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, ka)
}
