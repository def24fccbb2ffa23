package nginxconf

import (
	"context"
	"fmt"

	"github.com/midsummer/certmgr/domain"
)

// Result is what a regeneration did.
type Result struct {
	// Changed is true when a new file went live; the caller must reload.
	Changed bool
	// Served are the domains in the file, sorted.
	Served []domain.Name
	// Skipped are the domains left out and why, sorted by name; the caller
	// writes each Reason into the row's last_error.
	Skipped []Skipped
}

// Generator is the whole regeneration: vet certificates, render, prove with
// nginx -t, put live.
type Generator struct {
	cfg     Config
	vetter  *Vetter
	applier *Applier
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
	text, err := Render(g.cfg, sites)
	if err != nil {
		return res, err
	}
	changed, err := g.applier.Apply(ctx, text)
	if err != nil {
		return res, fmt.Errorf("regenerate nginx config: %w", err)
	}
	res.Changed = changed
	for _, s := range sites {
		res.Served = append(res.Served, s.Name)
	}
	return res, nil
}
