// Package tasks is where certmgr's parts become the product: one file per
// Celery task of the contract (issue, verify DNS, remove, regenerate, renew),
// each a worker.Handler registered on the worker's mux under its Celery name,
// and the issue pipeline that runs lock → DNS → ACME → store → row → nginx →
// reload. It is the only package that knows all the others.
package tasks
