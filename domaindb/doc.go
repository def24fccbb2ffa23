// Package domaindb is certmgr's view of the Django app's tenant_customdomain table.
//
// Django owns the table; certmgr reads rows and writes only the status columns
// (status, last_error, dns_verified_at, cert_issued_at, cert_expires_at), bumping
// updated_at on every write. Every domain name read from a row goes through
// domain.Parse: a row holding a hostile name is reported as a *BadRowError and never
// handed out to be served.
//
// Status rules (the contract's "a live certificate keeps being served"):
//   - MarkDNSVerified sets dns_verified (or keeps ssl_issued) and clears last_error.
//   - MarkIssued sets ssl_issued with the new certificate's times and clears last_error.
//   - MarkFailed sets failed with last_error, except when the row says its certificate
//     is live (status ssl_issued and cert_expires_at later than the store's clock): then
//     status stays ssl_issued and only last_error changes. The store decides from the
//     row itself, in the same UPDATE, so callers need not know; it returns the status
//     the row ended with.
//
// One issuer per domain across processes and replicas: Lock takes a session-level
// Postgres advisory lock on a connection of its own. If the holder dies, its session
// ends and Postgres releases the lock. The key is the FNV-64a hash of
// "certmgr/lock/" + the lock name, used as pg_advisory_lock's bigint; operators can
// see holders in pg_locks (locktype advisory, objsubid 1).
package domaindb
