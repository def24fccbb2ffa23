// Package certstore keeps certmgr's certificates in PostgreSQL, for fleet
// mode (CERTMGR_STORE=postgres): many app replicas, no shared volume, a
// `certmgr agent` beside every nginx.
//
// The tables are certmgr's own (certmgr_*), never Django's, created by a
// versioned migration (Migrate) that runs under an advisory lock so that many
// replicas starting at once apply it once. They hold:
//
//   - every lineage with all its versions (certificate, chain, fullchain,
//     private key), its renewal configuration (certbot's renewal/<name>.conf
//     text) and its owner;
//   - the ACME account files (certbot's accounts/ tree), every file encrypted;
//   - the served set: which domain nginx serves with which lineage, written by
//     the workers and rendered by every agent;
//   - pending HTTP-01 key authorizations, answered by the agents;
//   - one store version, incremented by every change and sent with NOTIFY on
//     the channel certmgr_store, and one heartbeat row per agent with the
//     version it has applied.
//
// Private keys (and account files) are sealed with AES-256-GCM under the
// Keyring from CERTMGR_STORE_KEY; each sealed value records which key sealed
// it and is bound to its row (the lineage, version and kind are the
// additional data), so a value copied to another row does not open. Open
// refuses a keyring that cannot open what the store holds: a wrong key is a
// configuration error at start, never a failed decryption later.
//
// WriteLineage writes what the store holds into a certbot-layout directory
// (the agent's pod-local LETSENCRYPT_DIR, a worker's scratch copy, `store
// export`) and Import reads one into the store, both through package acme,
// which owns that layout: certstore only translates its Lineage to acme's
// files and back.
package certstore
