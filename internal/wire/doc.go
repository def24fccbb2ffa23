// Package wire assembles certmgr's components from their Configs: Django's
// rows (domaindb), the DNS checker, ACME, nginx's generator and reloader, and
// the tasks over them, on the certbot-layout directory (files mode) or on the
// postgres store (fleet mode).
//
// cmd/certmgr builds every subcommand's components with Build, from the
// Configs its environment table fills; the tasks tests build theirs with it
// too, so how the parts fit together is written once. Tests that count what
// reaches the CA or nginx wrap the Issuer and Reloader through Config's
// WrapIssuer and WrapReloader.
package wire
