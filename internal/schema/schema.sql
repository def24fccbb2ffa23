-- tenant_customdomain: the Django app's CustomDomain model (app "tenant"), as its
-- migration creates it on PostgreSQL. Django owns this table; certmgr reads rows and
-- writes only status, last_error, dns_verified_at, cert_issued_at, cert_expires_at and
-- updated_at. Unqualified on purpose: the table lands in the first schema of search_path.
CREATE TABLE tenant_customdomain (
    id              bigserial    NOT NULL PRIMARY KEY,
    domain          varchar(253) NOT NULL UNIQUE,
    mode            varchar(16)  NOT NULL,
    tenant_id       bigint       NOT NULL,
    event_id        bigint       NULL,
    status          varchar(32)  NOT NULL,
    last_error      text         NOT NULL DEFAULT '',
    dns_verified_at timestamptz  NULL,
    cert_issued_at  timestamptz  NULL,
    cert_expires_at timestamptz  NULL,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    updated_at      timestamptz  NOT NULL DEFAULT now()
);

-- Django adds a pattern-ops index next to the unique index of every varchar unique column.
CREATE INDEX tenant_customdomain_domain_like ON tenant_customdomain (domain varchar_pattern_ops);
CREATE INDEX tenant_customdomain_tenant_id ON tenant_customdomain (tenant_id);
CREATE INDEX tenant_customdomain_event_id ON tenant_customdomain (event_id);
