// Package fleetbench measures fleet mode (package certstore and package
// agent) with real PostgreSQL and real nginx: how long a store commit takes
// to be served by every agent (1, 3 and 10 agents, each with its own nginx),
// how long a new agent takes to sync 10,000 certificates, and how much table
// space 10,000 certificates take. Run it with bench/fleet/run.sh, which prints
// the markdown for docs/benchmarks.md.
package fleetbench
