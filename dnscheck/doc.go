// Package dnscheck decides whether a tenant's domain really points at the platform
// before any certificate is ordered for it, and says, in words a tenant can act on,
// what to change when it does not.
//
// A name passes when its CNAME chain (at most MaxCNAMEHops links) reaches the
// platform's CNAME target, or, for a name without a CNAME (an apex domain cannot
// have one), when it has A/AAAA records and every one of them is an address of the
// target. A name that passes is then checked for CAA records (RFC 8659: the first
// non-empty CAA set found walking up from the name) that would make Let's Encrypt
// refuse the order.
//
// Check returns a Result for anything the tenant must fix (wrong or missing CNAME,
// NXDOMAIN, foreign addresses, CAA), and an error only when DNS itself failed to
// answer (SERVFAIL, timeouts, refused or unreachable servers): a *TransientError,
// worth retrying later. Result.Err turns a failed Result into a *NotVerifiedError,
// which the task layer reports as DNSNotVerified.
package dnscheck
