package nginxconf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/midsummer/certmgr/domain"
)

// Result is what a regeneration did.
type Result struct {
	// Changed is true when a new file went live; the caller must reload.
	Changed bool
	// ReloadPending is true when a file went live now or earlier and no
	// reload has been confirmed since (Reloaded): the caller must reload even
	// when Changed is false, e.g. after a crash between swap and reload.
	ReloadPending bool
	// Served are the domains in the file, sorted.
	Served []domain.Name
	// Skipped are the domains left out and why, sorted by name; the caller
	// writes each Reason into the row's last_error.
	Skipped []Skipped
	// Plan is how the file was rendered (the mode auto chose, and why).
	Plan Plan
}

// Generator is the whole regeneration: vet certificates, render, prove with
// nginx -t, put live.
type Generator struct {
	cfg     Config
	vetter  *Vetter
	applier *Applier

	mu   sync.Mutex
	last Plan // logged when it changes
}

// New checks cfg and returns a Generator.
func New(cfg Config) (*Generator, error) {
	cfg = cfg.WithDefaults()
	a, err := NewApplier(cfg)
	if err != nil {
		return nil, err
	}
	return &Generator{cfg: cfg, vetter: NewVetter(cfg), applier: a}, nil
}

// Applier returns the Generator's Applier (for its paths and Test).
func (g *Generator) Applier() *Applier { return g.applier }

// Regenerate renders the configuration for the domains whose certificates
// pass the Vetter and applies it. The skipped domains are returned even when
// Apply fails. It does not reload.
func (g *Generator) Regenerate(ctx context.Context, ds []Domain) (Result, error) {
	sites, skipped := g.vetter.Vet(ds)
	res := Result{Skipped: skipped}
	for _, s := range skipped {
		g.applier.log.Warn().Str("domain", string(s.Name)).Str("kind", string(s.Kind)).Str("reason", s.Reason).Msg("domain left out of nginx config")
	}
	plan, err := g.plan(ctx, sites)
	if err != nil {
		return res, fmt.Errorf("regenerate nginx config: %w", err)
	}
	res.Plan = plan
	// The marker is laid before the swap, so that no crash can leave a new
	// live file that nobody knows still has to be loaded.
	marker := g.applier.side("reload-pending")
	// Lstat and writeNew: a symlink planted at the marker's name is neither
	// followed nor written through.
	_, statErr := os.Lstat(marker)
	pendingBefore := statErr == nil
	if !pendingBefore {
		if err := writeNew(marker, nil); err != nil {
			return res, fmt.Errorf("regenerate nginx config: mark reload pending: %w", err)
		}
	}
	changed, err := g.applier.ApplyFunc(ctx, func(w io.Writer) error {
		return RenderTo(w, g.cfg, plan, slices.Values(sites))
	})
	if !changed && !pendingBefore {
		_ = os.Remove(marker)
	}
	if err != nil {
		return res, fmt.Errorf("regenerate nginx config: %w", err)
	}
	res.Changed = changed
	res.ReloadPending = changed || pendingBefore
	for _, s := range sites {
		res.Served = append(res.Served, s.Name)
	}
	return res, nil
}

// plan chooses how to render sites (sorted, as Vet returns them) for the
// configured nginx, and logs the choice when it changes.
func (g *Generator) plan(ctx context.Context, sites []Site) (Plan, error) {
	info, mainConf, err := g.applier.Nginx(ctx)
	if err != nil {
		return Plan{}, err
	}
	var keys error
	if g.cfg.CertMode == CertModeAuto && len(sites) > 0 {
		keys = g.workersCanRead(mainConf, info, sites[0])
	}
	p := Choose(g.cfg, info, len(sites), keys)
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.Mode != g.last.Mode || p.Rule != g.last.Rule || p.HTTP2 != g.last.HTTP2 || (p.CertCache > 0) != (g.last.CertCache > 0) {
		g.applier.log.Info().Str("cert_mode", string(p.Mode)).Str("configured", string(g.cfg.CertMode)).
			Str("rule", string(p.Rule)).Str("nginx_version", info.Version.String()).Str("http2", string(p.HTTP2)).
			Int("ssl_certificate_cache", p.CertCache).Int("domains", len(sites)).Str("reason", p.Reason).
			Msg("nginx certificate mode chosen")
	}
	g.last = p
	return p, nil
}

// workersCanRead checks, on one site's private key, that nginx's worker
// processes can read the keys, which they must in variable mode.
func (g *Generator) workersCanRead(mainConf string, info NginxInfo, s Site) error {
	u := workerUser(mainConf, info)
	return readableBy(u, filepath.Join(g.cfg.LetsEncryptDir, "live", s.lineage(), "privkey.pem"))
}

// Reloaded records that every nginx has loaded the live file, clearing
// ReloadPending. Call it only after a reload that reached every pod.
func (g *Generator) Reloaded() error {
	if err := os.Remove(g.applier.side("reload-pending")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear reload marker: %w", err)
	}
	return nil
}
