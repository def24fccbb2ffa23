// Package acme obtains and renews certificates from an ACME CA (Let's Encrypt in
// production, Pebble in tests) with lego, and keeps them on disk in exactly the
// layout certbot writes, so that nginx, operators' habits (`certbot
// certificates`) and lineages certbot issued before certmgr all keep working.
//
// It has three parts:
//
//   - Store: the certbot layout under LETSENCRYPT_DIR (archive/, live/,
//     renewal/). A new version is written completely into archive/, then made
//     live by exchanging the whole live/<name> directory in one rename, so a
//     reader never finds a certificate next to a key from another version.
//     WriteLineageFiles writes already-numbered versions the same way (package
//     certstore's export and fleet mode's pod-local copies), and
//     ReadLineageFiles reads a lineage back; every file goes through an
//     os.Root confined to the directory it belongs in.
//   - Manager: one ACME account per directory URL, HTTP-01 through the shared
//     webroot (certmgr never listens on port 80), issuance and renewal, and errors
//     classified so that the task layer can retry, back off or give up.
//   - The renewal policy: ACME Renewal Information (RFC 9773) when the CA offers
//     it, otherwise renew when a third of the lifetime remains, read on an
//     injected clock.
//
// lego v5 (github.com/go-acme/lego/v5, v5.6.0) is used package by package: it is
// the newest major the module proxy serves, its API takes a context everywhere,
// and it implements ARI and ACME profiles.
package acme
