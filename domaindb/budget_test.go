package domaindb_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
)

func wantBudget(t *testing.T, err error, budget string) {
	t.Helper()
	var be *domaindb.BudgetError
	if !errors.As(err, &be) || be.Budget != budget {
		t.Fatalf("err = %v; want budget %s refused", err, budget)
	}
}

// Let's Encrypt's account limits, counted in certmgr's own table: the
// account's orders per 3 hours (renewals included), certificates per
// registered domain and duplicates per week (by outcome), failed validations
// per name per hour.
func TestOrderBudgets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	lim := domaindb.Budgets{AccountOrdersPer3h: 100, CertsPerRegisteredDomainWeek: 2, DuplicatesPerWeek: 1, FailedValidationsPerHour: 1}
	reserve := func(name string, renewal bool) (int64, error) {
		id, _, err := b.store.ReserveOrder(ctx, domaindb.OrderRequest{Name: domainName(name), Owner: "tenant-1", Renewal: renewal}, lim)
		return id, err
	}
	id, err := reserve("a.shop.example.com", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.store.FinishOrder(ctx, id, domaindb.OrderIssued); err != nil {
		t.Fatal(err)
	}
	_, err = reserve("a.shop.example.com", false)
	wantBudget(t, err, domaindb.BudgetDuplicate)

	id, err = reserve("b.shop.example.com", false)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.store.FinishOrder(ctx, id, domaindb.OrderIssued)
	_, err = reserve("c.shop.example.com", false)
	wantBudget(t, err, domaindb.BudgetRegistered)
	// A renewal is not a new certificate for the registered domain.
	if _, err := reserve("c.shop.example.com", true); err != nil {
		t.Fatalf("renewal refused: %v", err)
	}

	id, err = reserve("other.example.net", false)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.store.FinishOrder(ctx, id, domaindb.OrderFailedValidation)
	_, err = reserve("other.example.net", false)
	wantBudget(t, err, domaindb.BudgetFailedValidation)
}

// Replicas share the account's budget: two stores (two replicas) reserving
// at once never take more than the limit between them.
func TestAccountBudgetAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other, err := domaindb.New(context.Background(), domaindb.Config{URL: b.pg.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	lim := domaindb.Budgets{AccountOrdersPer3h: 5, TenantOrdersPerHour: 1000}
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		s := b.store
		if i%2 == 1 {
			s = other
		}
		wg.Go(func() {
			_, _, err := s.ReserveOrder(context.Background(), domaindb.OrderRequest{
				Name: domainName("x.example.com"), Owner: "tenant-1"}, lim)
			var be *domaindb.BudgetError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &be) && be.Budget == domaindb.BudgetAccount:
				refused.Add(1)
				if be.RetryAt.Before(time.Now().Add(170 * time.Minute)) {
					t.Errorf("retry at %s; want about 3 hours ahead", be.RetryAt)
				}
			default:
				t.Errorf("ReserveOrder: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 5 || refused.Load() != 7 {
		t.Fatalf("%d reserved, %d refused; want 5 and 7", ok.Load(), refused.Load())
	}
}

func domainName(s string) domain.Name { return domain.Name(s) }
