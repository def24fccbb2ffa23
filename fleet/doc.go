// Package fleet is the worker's side of fleet mode (CERTMGR_STORE=postgres):
// the pieces that let the unchanged task pipeline (package tasks) run with no
// nginx, no shared volume and no Kubernetes permission.
//
//   - Mirror keeps a worker-local certbot-layout copy of the PostgreSQL store
//     (package certstore) for package acme to read and write, pulls before the
//     pipeline reads it, and pushes what acme stored. It is acme's
//     SaveJournal: each certificate acme saves is recorded as unpushed
//     (certmgr-unpushed/<lineage>, fsynced before the certificate's files are
//     written) until the store holds it, and only recorded certificates are
//     ever pushed. Pull pushes what a crash left unpushed, then removes the
//     lineages the store no longer holds and rewrites those whose live
//     certificate (by serial) is not the store's current one.
//   - Issuer wraps acme.Manager: a certificate issued or renewed is pushed to
//     the store before the task goes on.
//   - Challenges is acme's HTTP-01 solver: the key authorization goes into the
//     store, where every pod's agent answers it.
//   - Publisher stands where nginxconf.Generator stands: it vets the
//     certificates as the generator does and writes the served set, which
//     every agent renders (NOTIFY tells them).
//   - Waiter stands where podreload.Reloader stands: it waits up to
//     CERTMGR_AGENT_WAIT for every live agent's heartbeat to reach the store
//     version, and reports per pod whether it serves it.
package fleet
