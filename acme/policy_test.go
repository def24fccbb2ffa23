package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
)

func TestLifetimeRenewAt(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		desc     string
		lifetime time.Duration
		want     time.Duration // after start
	}{
		{"90-day certificate renews on day 60", 90 * day, 60 * day},
		{"45-day certificate renews on day 30", 45 * day, 30 * day},
		{"6-day certificate renews on day 4", 6 * day, 4 * day},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if got := LifetimeRenewAt(start, start.Add(tc.lifetime)); !got.Equal(start.Add(tc.want)) {
				t.Errorf("LifetimeRenewAt = %s, want %s", got, start.Add(tc.want))
			}
		})
	}
}

func TestARIRenewAtIsInsideTheWindowAndStable(t *testing.T) {
	t.Parallel()
	w := Window{Start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)}
	seen := map[time.Time]bool{}
	for i := range 200 {
		serial := fmt.Sprintf("%x", i*7919)
		at := ariRenewAt(w, serial)
		if at.Before(w.Start) || !at.Before(w.End) {
			t.Fatalf("ariRenewAt(%s) = %s, outside %s..%s", serial, at, w.Start, w.End)
		}
		if again := ariRenewAt(w, serial); !again.Equal(at) {
			t.Fatalf("ariRenewAt not stable for %s", serial)
		}
		seen[at.Truncate(time.Hour)] = true
	}
	if len(seen) < 20 {
		t.Errorf("renewal times spread over only %d hours of a 48-hour window", len(seen))
	}
}

func TestOfflineDecisionFollowsTheClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := Lineage{Name: "a.example.com", NotBefore: start, NotAfter: start.Add(90 * 24 * time.Hour)}
	tests := []struct {
		desc   string
		now    time.Time
		due    bool
		source string
	}{
		{"fresh", start.Add(24 * time.Hour), false, SourceLifetime},
		{"a second before two thirds", start.Add(60*24*time.Hour - time.Second), false, SourceLifetime},
		{"at two thirds", start.Add(60 * 24 * time.Hour), true, SourceLifetime},
		{"expired", start.Add(91 * 24 * time.Hour), true, SourceExpired},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			m, err := New(Config{Dir: t.TempDir(), Webroot: "/var/www/letsencrypt", Now: func() time.Time { return tc.now }})
			if err != nil {
				t.Fatal(err)
			}
			d := m.checkOffline(l)
			if d.Due != tc.due || d.Source != tc.source || d.Reason == "" {
				t.Errorf("decision %+v, want due=%v source=%s", d, tc.due, tc.source)
			}
		})
	}
	broken := Lineage{Name: "b.example.com", Err: errors.New("missing")}
	m, _ := New(Config{Dir: t.TempDir(), Webroot: "/var/www/letsencrypt"})
	if d := m.checkOffline(broken); !d.Due || d.Source != SourceBroken {
		t.Errorf("broken lineage: %+v", d)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	problem := func(typ string, status int) *legoacme.ProblemDetails {
		return &legoacme.ProblemDetails{Type: typ, HTTPStatus: status, Detail: "d"}
	}
	tests := []struct {
		desc string
		err  error
		want string
	}{
		{"rate limited", &legoacme.RateLimitedError{ProblemDetails: problem(legoacme.RateLimitedErrorType, 429), RetryAfter: time.Minute}, "rate"},
		{"bad nonce after lego's retries", &legoacme.NonceError{ProblemDetails: problem(legoacme.BadNonceErrorType, 400)}, "transient"},
		{"server internal", problem(legoacme.ServerInternalErrorType, 500), "transient"},
		{"challenge failed, inside lego's joined errors", errors.Join(fmt.Errorf("invalid authorization: %w", problem(legoacme.UnauthorizedErrorType, 403))), "validation"},
		{"dns failure", problem(legoacme.DNSErrorType, 400), "validation"},
		{"rejected identifier", problem(legoacme.RejectedIdentifierErrorType, 400), "rejected"},
		{"CA unreachable", &url.Error{Op: "Get", URL: "https://ca/dir", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, "transient"},
		{"deadline", context.DeadlineExceeded, "transient"},
		{"certificate not ready in time", fmt.Errorf("acme: %w", errors.New("time limit exceeded")), "transient"},
		{"unknown", errors.New("order identifiers have been modified by the ACME server"), "none"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			err := classify("op", tc.err)
			var (
				rl *RateLimitedError
				te *TransientError
				ve *ValidationError
				re *RejectedError
			)
			got := "none"
			switch {
			case errors.As(err, &rl):
				got = "rate"
				if rl.RetryAfter != time.Minute {
					t.Errorf("RetryAfter = %s", rl.RetryAfter)
				}
			case errors.As(err, &te):
				got = "transient"
			case errors.As(err, &ve):
				got = "validation"
			case errors.As(err, &re):
				got = "rejected"
			}
			if got != tc.want {
				t.Errorf("classify(%v) = %s (%v), want %s", tc.err, got, err, tc.want)
			}
			if !errors.Is(err, tc.err) && !errors.As(err, new(*legoacme.ProblemDetails)) {
				t.Errorf("classified error lost the original: %v", err)
			}
		})
	}
}

func TestParseKeyType(t *testing.T) {
	t.Parallel()
	for _, k := range KeyTypes() {
		got, err := ParseKeyType(" " + string(k) + " ")
		if err != nil || got != k {
			t.Errorf("ParseKeyType(%q) = %q, %v", k, got, err)
		}
	}
	if got, err := ParseKeyType("EC384"); err != nil || got != EC384 {
		t.Errorf("ParseKeyType(EC384) = %q, %v", got, err)
	}
	for _, bad := range []string{"", "rsa1024", "ed25519", "rsa8192"} {
		if _, err := ParseKeyType(bad); err == nil {
			t.Errorf("ParseKeyType(%q) accepted", bad)
		}
	}
}

func TestWebrootRefusesTokensThatAreNotFileNames(t *testing.T) {
	t.Parallel()
	w := webroot{root: t.TempDir()}
	for _, tok := range []string{"../../etc/passwd", "a/b", "", "x.y"} {
		if err := w.Present(context.Background(), "a.example.com", tok, "k"); err == nil {
			t.Errorf("Present accepted token %q", tok)
		}
	}
}
