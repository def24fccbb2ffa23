// Package schema holds the SQL of Django's tenant_customdomain table, the one table
// certmgr shares with the Django app. Tests create it in their own schema; the README
// shows it to readers. Django's migrations stay the source of truth in production.
package schema

import _ "embed"

// SQL creates tenant_customdomain (unqualified, so in the first schema of search_path).
//
//go:embed schema.sql
var SQL string
