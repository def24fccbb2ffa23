package acme

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme/api"
)

// Where a renewal decision comes from.
const (
	SourceARI      = "ari"      // the CA's suggested window (RFC 9773)
	SourceLifetime = "lifetime" // a third of the lifetime left
	SourceExpired  = "expired"
	SourceBroken   = "broken" // files missing or not matching: renew to repair
)

// Window is a suggested renewal window.
type Window struct {
	Start, End time.Time
}

// Decision says whether a lineage is due for renewal, when, and why.
type Decision struct {
	Due bool
	// RenewAt is when the policy renews the certificate; zero for a broken one.
	RenewAt time.Time
	Source  string
	// Reason is one line for a person (`certmgr renew --dry-run`).
	Reason string
	// Window is the CA's suggestion when Source is SourceARI.
	Window *Window
	// ExplanationURL is the CA's explanation of its window, if it gave one.
	ExplanationURL string
}

// LifetimeRenewAt is when a certificate valid from notBefore to notAfter is
// renewed without ARI: when a third of its lifetime remains (day 60 of 90, day
// 30 of a 45-day certificate, day 4 of 6).
func LifetimeRenewAt(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 3)
}

// ariRenewAt picks the renewal time inside an ARI window: a point that is
// uniformly spread over the window across certificates, as RFC 9773 §4.2 asks,
// but fixed for one certificate (derived from its serial) so that repeated
// checks agree with each other and with a dry run.
func ariRenewAt(w Window, serial string) time.Time {
	span := w.End.Sub(w.Start)
	if span <= 0 {
		return w.Start
	}
	sum := sha256.Sum256([]byte(serial))
	frac := float64(binary.BigEndian.Uint64(sum[:8])>>11) / float64(1<<53)
	return w.Start.Add(time.Duration(frac * float64(span)))
}

// decideLifetime applies the one-third rule at now.
func decideLifetime(now time.Time, l Lineage, why string) Decision {
	at := LifetimeRenewAt(l.NotBefore, l.NotAfter)
	d := Decision{RenewAt: at, Source: SourceLifetime}
	if !now.Before(at) {
		d.Due = true
		d.Reason = fmt.Sprintf("a third of the lifetime remains since %s (expires %s)", at.UTC().Format(time.RFC3339), l.NotAfter.UTC().Format(time.RFC3339))
	} else {
		d.Reason = fmt.Sprintf("renews at %s, when a third of the lifetime remains", at.UTC().Format(time.RFC3339))
	}
	if why != "" {
		d.Reason += "; " + why
	}
	return d
}

// Check decides whether lineage l is due at the manager's clock: expired or
// broken lineages are; otherwise the CA's ARI window when it offers one for
// this certificate, else the one-third rule. ARI needs the CA; when it cannot
// be asked, the decision falls back to the one-third rule and says so.
func (m *Manager) Check(ctx context.Context, l Lineage) Decision {
	now := m.cfg.Now()
	if l.Err != nil || !now.Before(l.NotAfter) {
		return m.checkOffline(l) // broken or expired: due, whatever the CA says
	}
	w, explanation, err := m.renewalInfo(ctx, l)
	if err != nil {
		why := ""
		if !errors.Is(err, api.ErrNoARI) {
			why = "ARI unavailable: " + err.Error()
		}
		return decideLifetime(now, l, why)
	}
	at := ariRenewAt(w, l.Serial)
	d := Decision{RenewAt: at, Source: SourceARI, Window: &w, ExplanationURL: explanation}
	window := fmt.Sprintf("the CA's renewal window %s to %s", w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339))
	if !now.Before(at) {
		d.Due = true
		d.Reason = fmt.Sprintf("inside %s (renewal time %s)", window, at.UTC().Format(time.RFC3339))
	} else {
		d.Reason = fmt.Sprintf("renews at %s, inside %s", at.UTC().Format(time.RFC3339), window)
	}
	return d
}

// renewalInfo asks the CA for l's ARI window. api.ErrNoARI means the CA has no
// ARI endpoint.
func (m *Manager) renewalInfo(ctx context.Context, l Lineage) (Window, string, error) {
	if l.leaf == nil {
		return Window{}, "", api.ErrNoARI
	}
	client, err := m.connect(ctx, false)
	if err != nil {
		return Window{}, "", err
	}
	if m.dir.RenewalInfo == "" {
		return Window{}, "", api.ErrNoARI
	}
	now := m.cfg.Now()
	m.ariMu.Lock()
	cached, ok := m.ari[l.Serial]
	m.ariMu.Unlock()
	if ok && now.Before(cached.until) {
		return cached.window, cached.explanation, nil
	}
	info, err := client.Certificate.GetRenewalInfo(ctx, l.leaf)
	if err != nil {
		return Window{}, "", classify("get renewal info", err)
	}
	w := Window{Start: info.SuggestedWindow.Start, End: info.SuggestedWindow.End}
	// RFC 9773 §4.3: ask again after the CA's Retry-After, bounded to between
	// one hour and a day.
	wait := min(max(info.RetryAfter, time.Hour), 24*time.Hour)
	m.ariMu.Lock()
	if m.ari == nil {
		m.ari = map[string]ariAnswer{}
	}
	m.ari[l.Serial] = ariAnswer{window: w, explanation: info.ExplanationURL, until: now.Add(wait)}
	m.ariMu.Unlock()
	return w, info.ExplanationURL, nil
}

// ariAnswer is a cached renewalInfo answer, kept until the CA's Retry-After.
type ariAnswer struct {
	window      Window
	explanation string
	until       time.Time
}

// Status is a lineage with its renewal decision.
type Status struct {
	Lineage
	Decision Decision
	// RenewKeyType is the key type a renewal orders (Manager.RenewalKeyType).
	RenewKeyType KeyType
	// Notes are renewal settings read and not followed (Manager.Notes).
	Notes []string
}

// Statuses lists every lineage in the store with its renewal decision, for
// `certmgr certificates` and `certmgr renew --dry-run`. With ari false the CA
// is not asked and the one-third rule decides.
func (m *Manager) Statuses(ctx context.Context, ari bool) ([]Status, error) {
	all, err := m.store.List()
	if err != nil {
		return nil, err
	}
	out := make([]Status, len(all))
	if !ari {
		for i, l := range all {
			out[i] = m.status(l, m.checkOffline(l))
		}
		return out, nil
	}
	// One ARI request per certificate: a few at a time.
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, l := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = m.status(l, m.Check(ctx, l))
		}()
	}
	wg.Wait()
	return out, nil
}

func (m *Manager) status(l Lineage, d Decision) Status {
	return Status{Lineage: l, Decision: d, RenewKeyType: m.RenewalKeyType(l), Notes: m.Notes(l)}
}

func (m *Manager) checkOffline(l Lineage) Decision {
	now := m.cfg.Now()
	switch {
	case l.Err != nil:
		return Decision{Due: true, Source: SourceBroken, Reason: "broken: " + l.Err.Error()}
	case !now.Before(l.NotAfter):
		return Decision{Due: true, RenewAt: l.NotAfter, Source: SourceExpired,
			Reason: fmt.Sprintf("expired at %s", l.NotAfter.UTC().Format(time.RFC3339))}
	}
	return decideLifetime(now, l, "")
}
