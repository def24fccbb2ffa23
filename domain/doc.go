// Package domain is the one gate every custom-domain name passes before certmgr uses it.
//
// Tenants type these names, so each is hostile until proven otherwise: it ends up in
// nginx configuration, file paths of the certificate store, ACME orders and log lines.
// Parse normalises a name (lower case, UTS #46 to punycode, trailing dot dropped) and
// rejects anything that is not a plain public host name made of [a-z0-9-] labels:
// wildcards, IP literals in any spelling, localhost and other special-use names,
// control characters, and Unicode that IDNA refuses or that mixes scripts to imitate
// another name. Policy adds the platform's own rules: a tenant may not claim the CNAME
// target or anything in the platform's zone.
//
// Task arguments, database rows and command-line flags all go through this package;
// a Name value has been through Parse.
package domain
