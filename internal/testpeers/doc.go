// Package testpeers starts and isolates the real systems certmgr talks to, for
// tests: Redis, PostgreSQL, Pebble with pebble-challtestsrv, nginx and a Python
// Celery producer.
//
// Each helper gives the calling test its own peer (a Redis database index, a
// PostgreSQL schema, processes on free loopback ports, a private nginx prefix)
// and tears it down with t.Cleanup. A peer that is not installed or not running
// fails the test when the CI environment variable is set and skips it, naming
// the command that installs it, otherwise. scripts/setup-peers.sh installs and
// starts all of them.
package testpeers
