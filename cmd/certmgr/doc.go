// Command certmgr is the one binary of certmgr: the Celery worker, the init
// container's nginx regeneration, the renewal run and the operators' commands.
//
// main reads the environment (env.go, the single table of variable names)
// into Settings, builds one zerolog logger, turns Settings into each
// component's Config and wires the components; the components themselves live
// in the packages beside this one.
package main
