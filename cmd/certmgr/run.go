package main

// The subcommands' bodies. Each stays "not built yet" until the issue that
// builds its pipeline lands; none pretends to work.

func runWorker(a *app) error                                   { return notBuilt("worker") }
func runIssue(a *app, domain string, force, asJSON bool) error { return notBuilt("issue") }
func runRenew(a *app, dryRun, asJSON bool) error               { return notBuilt("renew") }
func runRegen(a *app, asJSON bool) error                       { return notBuilt("regen-nginx") }
func runCertificates(a *app, asJSON bool) error                { return notBuilt("certificates") }
func runVerifyDNS(a *app, domain string, asJSON bool) error    { return notBuilt("verify-dns") }
