package acme

import "context"

// sweepResult is the outcome of sweep.
type sweepResult struct {
	Checked int
	Renewed []Lineage
	Failed  map[LineageName]error
	// Statuses are the decisions taken, one per lineage.
	Statuses []Status
}

// sweep is the renewal sweep without the task layer (tasks.Service.Sweep
// holds per-domain locks and records rows): it checks every lineage and,
// unless dryRun, renews the due ones one after another.
func sweep(ctx context.Context, m *Manager, dryRun bool) (sweepResult, error) {
	st, err := m.Statuses(ctx, true)
	if err != nil {
		return sweepResult{}, err
	}
	res := sweepResult{Checked: len(st), Statuses: st, Failed: map[LineageName]error{}}
	if dryRun {
		return res, nil
	}
	for _, s := range st {
		if !s.Decision.Due {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		l, err := m.Renew(ctx, s.Name)
		if err != nil {
			res.Failed[s.Name] = err
			continue
		}
		res.Renewed = append(res.Renewed, l)
	}
	return res, nil
}
