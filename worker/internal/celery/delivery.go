package celery

import (
	"crypto/rand"
	"encoding/hex"
)

// Delivery is a message a broker handed to the worker. Until it is
// acknowledged, retried, dead-lettered or requeued, the broker holds it for
// redelivery.
type Delivery struct {
	Tag   string // properties.delivery_tag; empty for a message that went to the dead list
	Raw   []byte // the message exactly as it was stored (for TooLarge: with an empty body)
	Queue string // the queue it came from
	// TooLarge is the size of a message over the broker's size limit. The
	// broker has put it away whole (dead list) without handing over its
	// body; Raw is its envelope with the body emptied (nil when that is over
	// 64 KiB or unreadable), so the task's id can be read for
	// a FAILURE result.
	TooLarge int
}

// EncodedResult is a result document (ResultMeta.Encode) ready to store.
type EncodedResult struct {
	TaskID string
	Raw    []byte
	// Request is what result_extended adds (nil without it), for backends
	// that keep it in columns of their own (django-db).
	Request *Extended
}

// NewTag returns a fresh delivery tag (a UUID4, like kombu's).
func NewTag() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
