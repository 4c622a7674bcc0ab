-- Tenant and membership changes, announced to the running services (issue 16;
-- docs/architecture.md "The caller cache").
--
-- A service keeps the callers it resolved (a tenant's registry row and a member's row, the
-- one query authentication adds to a request: RESOLVE_CALLER_SQL in src/http/context.rs)
-- for a moment. While it listens on the channel `capliquify_callers` it keeps them longer,
-- because these triggers tell it, at the commit of any change to a column that query reads,
-- which tenant's callers to forget: a suspension, a deletion, a removed member or a changed
-- role applies on every instance at once, whoever made it (a webhook, the CLI, the console,
-- an operator's own SQL). The payload is the tenant's id; `*` (TRUNCATE) means every tenant.
--
-- Updates that touch nothing the query reads (a tenant's schema_version during `migrate`,
-- its check and size bookkeeping) announce nothing. pg_notify is transactional: a rolled-back
-- change announces nothing, and identical payloads of one transaction arrive once.

CREATE FUNCTION public.announce_tenant_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('capliquify_callers', OLD.id::text);
    ELSE
        PERFORM pg_notify('capliquify_callers', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION public.announce_member_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('capliquify_callers', OLD.tenant_id::text);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM pg_notify('capliquify_callers', NEW.tenant_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION public.announce_every_caller_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM pg_notify('capliquify_callers', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_announce_update
    AFTER UPDATE ON public.tenants
    FOR EACH ROW
    WHEN ((OLD.clerk_organization_id, OLD.slug, OLD.name, OLD.schema_name,
           OLD.subscription_tier, OLD.subscription_status, OLD.trial_ends_at, OLD.max_users,
           OLD.max_entities, OLD.features, OLD.deleted_at, OLD.cluster, OLD.moving_to)
          IS DISTINCT FROM
          (NEW.clerk_organization_id, NEW.slug, NEW.name, NEW.schema_name,
           NEW.subscription_tier, NEW.subscription_status, NEW.trial_ends_at, NEW.max_users,
           NEW.max_entities, NEW.features, NEW.deleted_at, NEW.cluster, NEW.moving_to))
    EXECUTE FUNCTION public.announce_tenant_change();

CREATE TRIGGER tenants_announce_delete
    AFTER DELETE ON public.tenants
    FOR EACH ROW
    EXECUTE FUNCTION public.announce_tenant_change();

CREATE TRIGGER users_announce_update
    AFTER UPDATE ON public.users
    FOR EACH ROW
    WHEN ((OLD.id, OLD.tenant_id, OLD.clerk_user_id, OLD.role, OLD.removed_at,
           OLD.over_plan_limit)
          IS DISTINCT FROM
          (NEW.id, NEW.tenant_id, NEW.clerk_user_id, NEW.role, NEW.removed_at,
           NEW.over_plan_limit))
    EXECUTE FUNCTION public.announce_member_change();

CREATE TRIGGER users_announce_insert_delete
    AFTER INSERT OR DELETE ON public.users
    FOR EACH ROW
    EXECUTE FUNCTION public.announce_member_change();

CREATE TRIGGER tenants_announce_truncate
    AFTER TRUNCATE ON public.tenants
    FOR EACH STATEMENT
    EXECUTE FUNCTION public.announce_every_caller_change();

CREATE TRIGGER users_announce_truncate
    AFTER TRUNCATE ON public.users
    FOR EACH STATEMENT
    EXECUTE FUNCTION public.announce_every_caller_change();
