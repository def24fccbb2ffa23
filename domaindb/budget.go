package domaindb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/net/publicsuffix"

	"github.com/midsummer/certmgr/domain"
)

// budgetTable logs every ACME order certmgr starts, for the budgets that
// stop one tenant from spending the shared account's Let's Encrypt limits:
// counted here, in PostgreSQL, so that every replica sees the same counts.
const budgetTable = `CREATE TABLE IF NOT EXISTS certmgr_acme_order (
	id         bigserial    PRIMARY KEY,
	domain     varchar(253) NOT NULL,
	registered varchar(253) NOT NULL,
	owner      text         NOT NULL,
	forced     boolean      NOT NULL,
	renewal    boolean      NOT NULL DEFAULT false,
	outcome    text         NOT NULL DEFAULT 'pending',
	at         timestamptz  NOT NULL DEFAULT now()
)`

// Order outcomes recorded by FinishOrder.
const (
	OrderIssued           = "issued"
	OrderFailedValidation = "failed_validation"
	OrderFailed           = "failed"
)

// Budgets are the limits ReserveOrder enforces. Zero fields take the defaults,
// which are Let's Encrypt's published limits for one account and certmgr's
// own per-tenant ones.
type Budgets struct {
	// ForceInterval: at most one forced re-issue per domain in this window
	// (CERTMGR_FORCE_INTERVAL). Default 1h.
	ForceInterval time.Duration
	// TenantOrdersPerHour: orders per owner per hour
	// (CERTMGR_TENANT_ORDERS_PER_HOUR). Default 20.
	TenantOrdersPerHour int
	// AccountOrdersPer3h: new orders of the whole account in 3 hours. Default 300.
	AccountOrdersPer3h int
	// CertsPerRegisteredDomainWeek: certificates per registered domain
	// (Public Suffix List) per week, renewals excluded. Default 50.
	CertsPerRegisteredDomainWeek int
	// DuplicatesPerWeek: certificates for the same name per week. Default 5.
	DuplicatesPerWeek int
	// FailedValidationsPerHour: failed validations per name per hour. Default 5.
	FailedValidationsPerHour int
}

func (b Budgets) withDefaults() Budgets {
	b.ForceInterval = cmp.Or(b.ForceInterval, time.Hour)
	b.TenantOrdersPerHour = cmp.Or(b.TenantOrdersPerHour, 20)
	b.AccountOrdersPer3h = cmp.Or(b.AccountOrdersPer3h, 300)
	b.CertsPerRegisteredDomainWeek = cmp.Or(b.CertsPerRegisteredDomainWeek, 50)
	b.DuplicatesPerWeek = cmp.Or(b.DuplicatesPerWeek, 5)
	b.FailedValidationsPerHour = cmp.Or(b.FailedValidationsPerHour, 5)
	return b
}

// Budget names, as in BudgetError and the metrics.
const (
	BudgetForce            = "forced_reissue"
	BudgetTenant           = "tenant_orders_per_hour"
	BudgetAccount          = "account_orders_per_3h"
	BudgetRegistered       = "certificates_per_registered_domain_per_week"
	BudgetDuplicate        = "duplicate_certificates_per_week"
	BudgetFailedValidation = "failed_validations_per_hour"
)

// BudgetError refuses an order before it reaches the CA.
type BudgetError struct {
	Budget  string
	Limit   int
	Window  time.Duration
	RetryAt time.Time
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("order budget %s exhausted (%d per %s); may retry after %s",
		e.Budget, e.Limit, e.Window, e.RetryAt.UTC().Format(time.RFC3339))
}

// OrderRequest describes an order about to be made.
type OrderRequest struct {
	Name    domain.Name
	Owner   string // CustomDomain.Owner
	Forced  bool   // a forced re-issue (force=True)
	Renewal bool   // a renewal: counts only towards the account's orders
}

// Remaining is what is left of the account-wide budget after a reservation.
type Remaining struct {
	AccountOrders int
}

// ReserveOrder checks every budget for req and, when none is exhausted,
// records the order (outcome pending) and returns its id; otherwise a
// *BudgetError saying which budget and when to retry. Replicas are
// serialised by a transaction-scoped advisory lock, so two cannot both take
// the last unit of a budget.
func (s *Store) ReserveOrder(ctx context.Context, req OrderRequest, b Budgets) (id int64, rem Remaining, err error) {
	if err := s.ensureTables(ctx); err != nil {
		return 0, rem, err
	}
	b = b.withDefaults()
	registered, perr := publicsuffix.EffectiveTLDPlusOne(string(req.Name))
	if perr != nil {
		registered = string(req.Name)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, LockKey("acme-order-budget")); err != nil {
			return err
		}
		// The database's clock, not the replica's: every replica counts the
		// same windows.
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
			return err
		}
		type check struct {
			budget string
			limit  int
			window time.Duration
			where  string
			args   []any
			skip   bool
		}
		checks := []check{
			{BudgetForce, 1, b.ForceInterval, `domain = $2 AND forced`, []any{string(req.Name)}, !req.Forced},
			{BudgetTenant, b.TenantOrdersPerHour, time.Hour, `owner = $2 AND NOT renewal`, []any{req.Owner}, req.Renewal},
			{BudgetAccount, b.AccountOrdersPer3h, 3 * time.Hour, `true`, nil, false},
			{BudgetRegistered, b.CertsPerRegisteredDomainWeek, 7 * 24 * time.Hour, `registered = $2 AND outcome = 'issued' AND NOT renewal`, []any{registered}, req.Renewal},
			{BudgetDuplicate, b.DuplicatesPerWeek, 7 * 24 * time.Hour, `domain = $2 AND outcome = 'issued'`, []any{string(req.Name)}, req.Renewal},
			{BudgetFailedValidation, b.FailedValidationsPerHour, time.Hour, `domain = $2 AND outcome = 'failed_validation'`, []any{string(req.Name)}, false},
		}
		for _, c := range checks {
			if c.skip {
				continue
			}
			// The limit-th newest order in the window: once it leaves the
			// window, one unit is free again.
			var at time.Time
			args := append([]any{now.Add(-c.window)}, c.args...)
			args = append(args, c.limit-1)
			err := tx.QueryRow(ctx, `SELECT at FROM certmgr_acme_order WHERE at > $1 AND `+c.where+
				fmt.Sprintf(` ORDER BY at DESC OFFSET $%d LIMIT 1`, len(args)), args...).Scan(&at)
			if errors.Is(err, pgx.ErrNoRows) {
				if c.budget == BudgetAccount {
					var n int
					if err := tx.QueryRow(ctx, `SELECT count(*) FROM certmgr_acme_order WHERE at > $1`, now.Add(-c.window)).Scan(&n); err != nil {
						return err
					}
					rem.AccountOrders = c.limit - n - 1
				}
				continue
			}
			if err != nil {
				return err
			}
			return &BudgetError{Budget: c.budget, Limit: c.limit, Window: c.window, RetryAt: at.Add(c.window)}
		}
		return tx.QueryRow(ctx, `INSERT INTO certmgr_acme_order (domain, registered, owner, forced, renewal, at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			string(req.Name), registered, req.Owner, req.Forced, req.Renewal, now).Scan(&id)
	})
	var be *BudgetError
	if errors.As(err, &be) {
		return 0, rem, be
	}
	if err != nil {
		return 0, rem, fmt.Errorf("reserve an order for %s: %w", req.Name, err)
	}
	return id, rem, nil
}

// FinishOrder records how an order ended (OrderIssued, OrderFailedValidation
// or OrderFailed): issued certificates and failed validations count towards
// their weekly and hourly budgets.
func (s *Store) FinishOrder(ctx context.Context, id int64, outcome string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE certmgr_acme_order SET outcome = $2 WHERE id = $1`, id, outcome); err != nil {
		return fmt.Errorf("record order %d outcome: %w", id, err)
	}
	return nil
}
