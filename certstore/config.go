package certstore

import (
	"cmp"
	"errors"
	"time"

	"github.com/rs/zerolog"
)

// Channel is the PostgreSQL NOTIFY channel of store changes. The payload is
// "<schema> <store version>".
const Channel = "certmgr_store"

// Config configures a Store.
type Config struct {
	// URL is the PostgreSQL database (MIDSUMMER_DB_URL); the tables go in its
	// search_path's first schema. Required.
	URL string
	// Key is CERTMGR_STORE_KEY: base64 of 32 random bytes, or "new,old"
	// during a rotation. Required.
	Key string
	// Logger receives the store's logs (component=certstore). Default: none.
	Logger zerolog.Logger
	// Now is the clock of heartbeats. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if cmp.Or(c.URL) == "" {
		return errors.New("certstore config: URL is required")
	}
	return nil
}
