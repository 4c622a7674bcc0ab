-- Placements (DESIGN.md §12): which PostgreSQL cluster holds a tenant's schema, and the
-- read-only flag of a move in progress. The home cluster (DATABASE_URL) holds public;
-- other clusters are named in CAPLIQUIFY_CLUSTERS and run these same public migrations,
-- so the tenant catalog and the tenant SQL functions are the same everywhere (their
-- registry tables stay empty: the home registry is the only one).

ALTER TABLE public.tenants
    ADD COLUMN cluster text NOT NULL DEFAULT 'home'
        CONSTRAINT tenants_cluster_name_check CHECK (cluster ~ '^[a-z][a-z0-9_]{0,30}$'),
    -- Set while `capliquify tenant move` copies the tenant: its data is read-only (writes
    -- are answered 503 with Retry-After) until the placement flips or the move is undone.
    ADD COLUMN moving_to text
        CONSTRAINT tenants_moving_to_name_check CHECK (moving_to ~ '^[a-z][a-z0-9_]{0,30}$'),
    ADD CONSTRAINT tenants_moving_elsewhere_check CHECK (moving_to IS DISTINCT FROM cluster);

-- Audit rows of acts done in a tenant transaction on a cluster other than home. They are
-- written in the act's own transaction (DESIGN.md §10: neither exists without the other),
-- on the only database that transaction can write to, then drained into the home
-- public.audit_logs (idempotent by id) before the trail is read. Same columns as
-- audit_logs, without the foreign keys: tenants and users live on the home cluster.
CREATE TABLE public.audit_outbox (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL,
    user_id        uuid,
    action         varchar(100) NOT NULL,
    resource_type  varchar(50),
    resource_id    varchar(255),
    ip_address     inet,
    user_agent     text,
    metadata       jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_audit_outbox_tenant ON public.audit_outbox (tenant_id, created_at);

-- Rights (migration 0006): the service drains the outbox; a tenant's role appends its own
-- rows only, as it does to audit_logs.
GRANT SELECT, INSERT, DELETE ON public.audit_outbox TO capliquify_service;
GRANT INSERT ON public.audit_outbox TO capliquify_tenant;
ALTER TABLE public.audit_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_outbox_service ON public.audit_outbox TO capliquify_service
    USING (true) WITH CHECK (true);
CREATE POLICY audit_outbox_tenant_append ON public.audit_outbox FOR INSERT TO capliquify_tenant
    WITH CHECK (public.tenant_role_name(tenant_id) = current_user);
