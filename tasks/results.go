package tasks

import (
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
)

// The results of the contract's tasks (CONTRACT.md), in one place: what the
// Celery result backend stores and the commands print with --json. Every
// JSON key is snake_case, nested types included (TestResultKeysAreSnakeCase).

// IssueResult is the result of tenant.tasks.issue_custom_domain_task and of
// `certmgr issue`, in the contract's shape.
type IssueResult struct {
	Domain   string                `json:"domain"`
	Status   string                `json:"status"`
	NotAfter string                `json:"not_after"`
	Issued   bool                  `json:"issued"`
	Reloaded []podreload.PodResult `json:"reloaded"`
}

// RegenResult is the result of tenant.tasks.regen_custom_domains_nginx_task
// and of `certmgr regen-nginx`.
type RegenResult struct {
	Domains  int                   `json:"domains"`
	Changed  bool                  `json:"changed"`
	Skipped  []nginxconf.Skipped   `json:"skipped"`
	Reloaded []podreload.PodResult `json:"reloaded"`
}

// VerifyResult is the result of tenant.tasks.verify_custom_domain_dns_task
// and of `certmgr verify-dns`.
type VerifyResult struct {
	Domain string `json:"domain"`
	Status string `json:"status"`
	DNSOK  bool   `json:"dns_ok"`
	Detail string `json:"detail"`
}

// RemoveResult is the result of tenant.tasks.remove_custom_domain_task.
type RemoveResult struct {
	Domain   string                `json:"domain"`
	Removed  bool                  `json:"removed"`
	Purged   bool                  `json:"purged"`
	Reloaded []podreload.PodResult `json:"reloaded"`
}

// RenewResult is the result of tenant.tasks.renew_custom_domains_task, of
// `certmgr renew` and of the worker's own sweep.
type RenewResult struct {
	Checked int           `json:"checked"`
	Renewed []string      `json:"renewed"`
	Failed  []RenewFailed `json:"failed"`
	// Deferred are due lineages not ordered because the ACME account's
	// order budget ran out during the sweep; the next sweep renews them.
	Deferred []string `json:"deferred"`
	DryRun   bool     `json:"dry_run"`
	// Skipped is set when another replica was sweeping: this one did nothing.
	Skipped      bool                  `json:"skipped"`
	Certificates []SweepEntry          `json:"certificates"`
	Reloaded     []podreload.PodResult `json:"reloaded"`
	// RowsWithoutCertificate are domains whose row says a certificate is
	// served (ssl_issued, or cert_expires_at set) that no lineage names: an
	// operator must look (issue them, or restore the store).
	RowsWithoutCertificate []string `json:"rows_without_certificate"`
}

// RenewFailed is one lineage whose renewal failed.
type RenewFailed struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// SweepEntry is one lineage and the sweep's decision about it.
type SweepEntry struct {
	Name     string   `json:"name"`
	Domains  []string `json:"domains"`
	NotAfter string   `json:"not_after,omitempty"`
	Due      bool     `json:"due"`
	RenewAt  string   `json:"renew_at,omitempty"`
	Source   string   `json:"source,omitempty"`
	Reason   string   `json:"reason"`
	Action   string   `json:"action"` // renewed, failed, would renew, kept, no row, not renewed, broken
}
