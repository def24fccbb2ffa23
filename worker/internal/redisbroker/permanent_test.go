package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gomodule/redigo/redis"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		err  error
		want bool
	}{
		{desc: "WRONGTYPE", err: fmt.Errorf("store: %w", redis.Error("WRONGTYPE Operation against a key holding the wrong kind of value")), want: true},
		{desc: "WRONGTYPE in a script (Redis 7)", err: redis.Error("WRONGTYPE Operation against a key holding the wrong kind of value script: 1a84, on @user_script:8."), want: true},
		{desc: "ERR", err: redis.Error("ERR value is not an integer or out of range"), want: true},
		{desc: "LOADING", err: redis.Error("LOADING Redis is loading the dataset in memory")},
		{desc: "READONLY", err: redis.Error("READONLY You can't write against a read only replica.")},
		{desc: "OOM in a script (Redis 6)", err: redis.Error("ERR Error running script (call to f_1a84): @user_script:8: -OOM command not allowed when used memory > 'maxmemory'. ")},
		{desc: "MASTERDOWN", err: redis.Error("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.")},
		{desc: "NOAUTH", err: redis.Error("NOAUTH Authentication required.")},
		{desc: "connection closed", err: io.EOF},
		{desc: "timeout", err: context.DeadlineExceeded},
		{desc: "refused", err: errors.New("dial tcp: connect: connection refused")},
	} {
		if got := Permanent(tc.err); got != tc.want {
			t.Errorf("%s: Permanent = %v, want %v", tc.desc, got, tc.want)
		}
	}
}
