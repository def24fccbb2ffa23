// Package agent is `certmgr agent`, the sidecar beside every nginx in fleet
// mode (CERTMGR_STORE=postgres). It keeps this pod's nginx serving what the
// PostgreSQL certificate store (package certstore) says:
//
//   - sync: read a consistent snapshot of the store, write the lineages the
//     served set needs into the pod-local certbot-layout directory
//     (LETSENCRYPT_DIR on an emptyDir), render custom-domains.conf with the
//     same renderer as the worker, prove it with nginx -t, swap it and reload
//     this nginx; then record the applied store version in its heartbeat row;
//   - listen: a connection of its own LISTENs on certstore.Channel; a
//     notification syncs within a second, every (re)connection syncs fully, and
//     a full sync also runs every Resync, so a lost notification costs at most
//     that;
//   - serve: GET /.well-known/acme-challenge/<token> answers the HTTP-01 key
//     authorization from the store (the generated HTTP server proxies that path
//     here), /healthz, /readyz (after the first complete sync) and /metrics.
//
// While PostgreSQL is unreachable nothing on disk changes: nginx keeps
// serving the last configuration that passed nginx -t, and the agent retries.
package agent
