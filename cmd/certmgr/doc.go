// Command certmgr is the one binary of certmgr: the Celery worker, the init
// container's nginx regeneration, the renewal run and the operators' commands.
//
// main reads the environment straight into each component's Config (env.go:
// one table of variables, each row parsed by the owning package's own parser;
// --help and the README's table are generated from it), builds one zerolog
// logger and has package internal/wire assemble the components from those
// Configs (wire.go); the components themselves live in the packages beside
// this one.
package main
