package domaindb

// budgetTable logs every ACME order certmgr starts, for the budgets that
// stop one tenant from spending the shared account's Let's Encrypt limits:
// counted here, in PostgreSQL, so that every replica sees the same counts.
const budgetTable = `CREATE TABLE IF NOT EXISTS certmgr_acme_order (
	id         bigserial    PRIMARY KEY,
	domain     varchar(253) NOT NULL,
	registered varchar(253) NOT NULL,
	owner      text         NOT NULL,
	forced     boolean      NOT NULL,
	outcome    text         NOT NULL DEFAULT 'pending',
	at         timestamptz  NOT NULL DEFAULT now()
)`
