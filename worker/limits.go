package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// DefaultMaxMessageBytes is Config.MaxMessageBytes's default: 1 MiB, far above
// any certmgr task (a domain id and a few flags) and far below what would
// strain the worker's memory.
const DefaultMaxMessageBytes = 1 << 20

// tooLargeHeaders are the fields of an over-limit message's envelope needed
// for its FAILURE result: protocol 2 keeps them in the headers; protocol 1
// only has correlation_id (the task id) outside its body.
type tooLargeHeaders struct {
	Headers struct {
		ID           string  `json:"id"`
		Task         string  `json:"task"`
		Group        *string `json:"group"`
		ParentID     *string `json:"parent_id"`
		IgnoreResult bool    `json:"ignore_result"`
	} `json:"headers"`
	Properties struct {
		CorrelationID string `json:"correlation_id"`
	} `json:"properties"`
}

// sizeGuard answers messages the broker put away for their size.
type sizeGuard struct {
	limit   int
	deadQ   string
	results resultStore
	persist *persister
	log     zerolog.Logger
}

// reject records a FAILURE (kombu.exceptions.LimitExceeded, naming the limit)
// for a message the broker moved to the dead list for its size. Its body
// never reached this process. Storing it stops when ctx (the fetcher's) ends,
// so that a result backend outage cannot hold the fetcher's shutdown.
func (g *sizeGuard) reject(ctx context.Context, fd celery.Delivery) {
	var h tooLargeHeaders
	if fd.Raw != nil {
		_ = json.Unmarshal(fd.Raw, &h)
	}
	id := h.Headers.ID
	if id == "" {
		id = h.Properties.CorrelationID
	}
	ev := g.log.Error().Int("bytes", fd.TooLarge).Int("limit", g.limit).
		Str("dead_list", g.deadQ).Str(FieldTaskID, id).Str(FieldTaskName, h.Headers.Task)
	if id == "" || h.Headers.IgnoreResult {
		ev.Msg("message over the size limit moved to the dead list; no result stored (no task id, or ignore_result)")
		return
	}
	ev.Msg("message over the size limit moved to the dead list; FAILURE stored")
	info := celery.ExceptionInfo{
		ExcType:   "LimitExceeded",
		ExcModule: "kombu.exceptions",
		ExcMessage: []any{fmt.Sprintf("message of %d bytes is over the worker's limit of %d bytes "+
			"(CERTMGR_MAX_MESSAGE_BYTES); it was moved to %s", fd.TooLarge, g.limit, g.deadQ)},
	}
	meta := celery.NewResultMeta(id, celery.StateFailure, info, "", time.Now())
	if h.Headers.Group != nil {
		meta.GroupID = *h.Headers.Group
	}
	if h.Headers.ParentID != nil {
		meta.ParentID = *h.Headers.ParentID
	}
	raw, err := meta.Encode()
	if err != nil {
		return
	}
	if err := g.persist.try(ctx, 0, func(ctx context.Context) error {
		return g.results.StoreMany(ctx, []celery.EncodedResult{{TaskID: id, Raw: raw}})
	}); err != nil {
		g.log.Error().Err(err).Str(FieldTaskID, id).Msg("storing the size-limit failure failed")
	}
}
