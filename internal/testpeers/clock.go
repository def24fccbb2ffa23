package testpeers

import (
	"sync/atomic"
	"time"
)

// Clock is the test kit's movable clock, for the Now of a component's
// Config: real time shifted by an offset, so that timeouts and tickers keep
// running while a test moves the renewal policy's idea of the date. The zero
// value is the real time; it is safe for concurrent use.
type Clock struct{ offset atomic.Int64 }

// Now is the clock's time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Set moves the clock so that Now is about t.
func (c *Clock) Set(t time.Time) { c.offset.Store(int64(time.Until(t))) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
