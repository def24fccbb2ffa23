package djangodb

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		err  error
		want bool
	}{
		{desc: "value too long (22001)", err: fmt.Errorf("store: %w", &pgconn.PgError{Code: "22001"}), want: true},
		{desc: "invalid text representation (22P02)", err: &pgconn.PgError{Code: "22P02"}, want: true},
		{desc: "not null violation (23502)", err: &pgconn.PgError{Code: "23502"}, want: true},
		{desc: "undefined table (42P01): a migration is missing", err: &pgconn.PgError{Code: "42P01"}},
		{desc: "admin shutdown (57P01)", err: &pgconn.PgError{Code: "57P01"}},
		{desc: "too many connections (53300)", err: &pgconn.PgError{Code: "53300"}},
		{desc: "timeout", err: context.DeadlineExceeded},
		{desc: "connection refused", err: errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")},
		{desc: "nil", err: nil},
	} {
		if got := Permanent(tc.err); got != tc.want {
			t.Errorf("%s: Permanent = %v, want %v", tc.desc, got, tc.want)
		}
	}
}
