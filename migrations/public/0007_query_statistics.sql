-- Per-tenant query statistics (`capliquify monitor slow-queries`, /admin/api/slow-queries).
--
-- pg_stat_statements groups statements by the role that ran them. Every tenant transaction
-- runs as the tenant's own role (migration 0006), so a statement's `userid` names its tenant:
-- attribution needs no query text, and works although our SQL never names a schema (the
-- guide's `query LIKE '%tenant_…%'` finds nothing: statements run through the search path).
--
-- The module must be in shared_preload_libraries (the embedded cluster sets it when the
-- installed PostgreSQL has it). ensure_query_stats() installs the extension when it can
-- (loaded, available, run by a superuser); `capliquify migrate` calls it every time, so
-- enabling the module later needs no new migration.

CREATE FUNCTION public.ensure_query_stats() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') THEN
        RETURN 'installed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') THEN
        RETURN 'unavailable: the pg_stat_statements module (PostgreSQL contrib) is not installed';
    END IF;
    -- (Only a superuser may install it, and read shared_preload_libraries.)
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper) THEN
        RETURN 'not installed: CREATE EXTENSION pg_stat_statements needs a superuser';
    END IF;
    IF NOT (SELECT 'pg_stat_statements' = ANY (string_to_array(
                replace(current_setting('shared_preload_libraries'), ' ', ''), ','))) THEN
        RETURN 'not loaded: add pg_stat_statements to shared_preload_libraries and restart PostgreSQL';
    END IF;
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;
    -- Statistics of every role, tenants included, are not for everyone.
    REVOKE ALL ON public.pg_stat_statements, public.pg_stat_statements_info FROM PUBLIC;
    RETURN 'installed';
END
$$;

-- The slowest statements (by total execution time) of every tenant, or of one; only
-- statements that ran as a tenant's role, in this database. SECURITY DEFINER: the service
-- reads these rows without the right to read every role's statistics.
CREATE FUNCTION public.tenant_query_stats(p_tenant_id uuid DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (tenant_id uuid, slug text, queryid bigint, query text, calls bigint,
               total_ms double precision, mean_ms double precision, max_ms double precision,
               rows bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF to_regclass('public.pg_stat_statements') IS NULL THEN
        RAISE EXCEPTION 'pg_stat_statements is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add pg_stat_statements to shared_preload_libraries, restart PostgreSQL, then run `capliquify migrate` as a superuser';
    END IF;
    RETURN QUERY
        SELECT t.id, t.slug::text, s.queryid, s.query, s.calls,
               s.total_exec_time, s.mean_exec_time, s.max_exec_time, s.rows
          FROM public.pg_stat_statements s
          JOIN pg_roles r ON r.oid = s.userid
          JOIN public.tenants t ON public.tenant_role_name(t.id) = r.rolname
         WHERE s.dbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
           AND (p_tenant_id IS NULL OR t.id = p_tenant_id)
         ORDER BY s.total_exec_time DESC
         LIMIT greatest(p_limit, 0);
END
$$;

REVOKE EXECUTE ON FUNCTION public.ensure_query_stats(), public.tenant_query_stats(uuid, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.tenant_query_stats(uuid, integer) TO capliquify_service;

SELECT public.ensure_query_stats();
