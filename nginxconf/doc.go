// Package nginxconf turns the list of custom domains into the nginx
// configuration that serves them, proves it with the real `nginx -t`, and only
// then puts it live.
//
// The old setup regenerated custom-domains.conf with a template and reloaded;
// a bad row or a missing certificate left nginx with a file it refused, and the
// next restart of the pod failed. This package makes that impossible:
//
//   - [Vetter] keeps out every domain whose certificate is missing, unreadable,
//     expired, for another name, or not matching its key, and says why per
//     domain ([Skipped]) so the caller can write the row's last_error.
//   - [Render] is pure and deterministic (sorted, stable, golden-tested). It
//     refuses any name outside [a-z0-9.-] even though names already passed
//     package domain: a name can never add or break a server block.
//   - [Applier] writes the candidate beside the live file, runs `nginx -t` on a
//     temporary main configuration that includes the candidate in place of the
//     live file (the live file is never broken, not even for the length of the
//     test), then renames it into place and keeps the previous file as
//     .<name>.last-good. An unchanged result (same SHA-256 as the live file)
//     leaves the live file alone and runs no nginx -t.
//   - [LocalReloader] sends SIGHUP to the master when its pid file is
//     readable and runs `nginx -s reload` (one more full parse) only when it
//     is not ([ReloadAuto]); [Coalesce] folds reload requests
//     that arrive together into one ([Coalescer]). LocalReloader always means
//     this pod's nginx; package podreload's Reloader reloads every pod.
//
// Two rendering modes ([CertMode]): per-server (one server block per domain,
// certificates loaded at reload) and variable (one server block; nginx picks
// the certificate by $ssl_server_name through a map of known names at each
// handshake, so renewals need no reload). The default, auto, picks one at
// each regeneration ([Choose]) from `nginx -V` ([ParseNginxV]) and the number
// of domains, with ssl_certificate_cache where nginx has it; the [Plan] is in
// [Result]. nginxconf/README.md says when which wins, with the benchmark's
// numbers.
//
// The renderer streams ([RenderTo] writes to the candidate file from an
// iterator over sites), so a regeneration's memory does not grow with the
// size of the file.
package nginxconf
