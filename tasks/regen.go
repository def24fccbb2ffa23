package tasks

import (
	"context"

	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/worker"
)

func (s *Service) regenTask(ctx context.Context, t *worker.Task) error {
	res, err := s.Regenerate(ctx, true)
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	t.SetResult(res)
	return nil
}

// Regenerate rebuilds custom-domains.conf from the database and, when reload
// is set and the file changed, reloads nginx everywhere. The init container
// runs it without reload: nginx has not started yet.
func (s *Service) Regenerate(ctx context.Context, reload bool) (RegenResult, error) {
	pub, err := s.publish(ctx, publishOptions{noReload: !reload})
	res := RegenResult{
		Domains:  len(pub.generated.Served),
		Changed:  pub.generated.Changed,
		Skipped:  pub.generated.Skipped,
		Reloaded: pub.pods(),
	}
	if res.Skipped == nil {
		res.Skipped = []nginxconf.Skipped{}
	}
	return res, err
}
