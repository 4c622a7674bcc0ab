-- The audit trail is append-only: UPDATE, DELETE and TRUNCATE on audit_logs are refused.
-- The one exception is purging a tenant, which removes that tenant's rows (the foreign keys
-- cascade from tenants and users); the purge transaction names the tenant it purges in the
-- transaction-local setting capliquify.purging_tenant, and only rows of that tenant may go.
-- (A superuser can still disable triggers; least-privilege database roles close that.)

CREATE FUNCTION public.audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF OLD.tenant_id IS NOT NULL
           AND current_setting('capliquify.purging_tenant', true) = OLD.tenant_id::text THEN
            IF TG_OP = 'DELETE' THEN
                RETURN OLD;
            END IF;
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows are removed only by purging their tenant';
END
$$;

CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON public.audit_logs
    FOR EACH ROW EXECUTE FUNCTION public.audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON public.audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_logs_append_only();

-- The audit log API lists a tenant's rows newest first.
CREATE INDEX idx_audit_logs_tenant_created ON public.audit_logs (tenant_id, created_at DESC, id DESC);
