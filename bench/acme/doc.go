// Package acmebench measures issuance through certmgr's acme package against
// Debian's certbot, both against the same Pebble and the same nginx serving the
// HTTP-01 webroot, in the same run. Run it with bench/acme/run.sh, which prints
// the markdown rows for docs/benchmarks.md.
package acmebench
