package domaindb_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// BenchmarkReserveOrder is the cost every ACME order pays for the budgets:
// one transaction (advisory lock, the six budget queries, the insert) on a
// table already holding a week of 5,000 orders.
func BenchmarkReserveOrder(b *testing.B) {
	pg := testpeers.Postgres(b)
	ctx := context.Background()
	s, err := domaindb.New(ctx, domaindb.Config{URL: pg.URL})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	lim := domaindb.Budgets{AccountOrdersPer3h: 1 << 30, TenantOrdersPerHour: 1 << 30, CertsPerRegisteredDomainWeek: 1 << 30, DuplicatesPerWeek: 1 << 30}
	if _, _, err := s.ReserveOrder(ctx, domaindb.OrderRequest{Name: "warm.example.com", Owner: "tenant-0"}, lim); err != nil {
		b.Fatal(err)
	}
	pg.Exec(b, `INSERT INTO certmgr_acme_order (domain, registered, owner, forced, outcome, at)
		SELECT 'd' || i || '.t' || (i % 500) || '.example.com', 't' || (i % 500) || '.example.com', 'tenant-' || (i % 500),
		       i % 10 = 0, 'issued', now() - (i || ' seconds')::interval * 100
		FROM generate_series(1, 5000) AS i`)
	i := 0
	for b.Loop() {
		i++
		name := domainName(fmt.Sprintf("b%d.t%d.example.com", i, i%500))
		if _, _, err := s.ReserveOrder(ctx, domaindb.OrderRequest{Name: name, Owner: fmt.Sprintf("tenant-%d", i%500)}, lim); err != nil {
			b.Fatal(err)
		}
	}
}
