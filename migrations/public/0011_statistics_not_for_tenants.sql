-- Statistics are not for tenants (issue 11, item 7). A tenant's role could call
-- public.pg_stat_statements(true) — the function behind the view 0007 revoked — and read every
-- role's statements, and could read pg_stat_user_tables, which lists every tenant schema's
-- tables with their row counts. Here:
-- - the extension moves out of `public` into `capliquify_stats`, a schema no one but its
--   owner may use; its functions are revoked from PUBLIC as well as its views;
-- - the per-table statistics views and the per-relation pg_stat_get_*(oid) functions under
--   them are revoked from PUBLIC (in this database).
-- Each step needs a superuser (the catalog's and the extension's owner); under a
-- non-superuser owner they are skipped with a notice, as 0006 does for set_config
-- (docs/security.md).

CREATE SCHEMA IF NOT EXISTS capliquify_stats;
REVOKE ALL ON SCHEMA capliquify_stats FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.ensure_query_stats() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    superuser boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    reader regrole := (SELECT proowner::regrole FROM pg_proc
                        WHERE oid = 'public.tenant_query_stats(uuid, integer)'::regprocedure);
    f regprocedure;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') THEN
            RETURN 'unavailable: the pg_stat_statements module (PostgreSQL contrib) is not installed';
        END IF;
        -- (Only a superuser may install it, and read shared_preload_libraries.)
        IF NOT superuser THEN
            RETURN 'not installed: CREATE EXTENSION pg_stat_statements needs a superuser';
        END IF;
        IF NOT (SELECT 'pg_stat_statements' = ANY (string_to_array(
                    replace(current_setting('shared_preload_libraries'), ' ', ''), ','))) THEN
            RETURN 'not loaded: add pg_stat_statements to shared_preload_libraries and restart PostgreSQL';
        END IF;
        CREATE EXTENSION pg_stat_statements SCHEMA capliquify_stats;
    END IF;
    IF NOT superuser THEN
        IF (SELECT extnamespace FROM pg_extension WHERE extname = 'pg_stat_statements')
               <> 'capliquify_stats'::regnamespace THEN
            RETURN 'installed in the wrong schema: run `capliquify migrate` as a superuser to move pg_stat_statements into capliquify_stats';
        END IF;
        RETURN 'installed';
    END IF;
    IF (SELECT extnamespace FROM pg_extension WHERE extname = 'pg_stat_statements')
           <> 'capliquify_stats'::regnamespace THEN
        ALTER EXTENSION pg_stat_statements SET SCHEMA capliquify_stats;
    END IF;
    -- Statistics of every role, tenants included, are not for everyone: the views and the
    -- functions behind them.
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_depend d
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_stat_statements'
               JOIN pg_proc p ON p.oid = d.objid
              WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    REVOKE ALL ON capliquify_stats.pg_stat_statements, capliquify_stats.pg_stat_statements_info
        FROM PUBLIC;
    -- tenant_query_stats (SECURITY DEFINER) reads as its owner.
    IF reader IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON capliquify_stats.pg_stat_statements TO %s', reader);
        EXECUTE format('GRANT EXECUTE ON FUNCTION capliquify_stats.pg_stat_statements(boolean) TO %s', reader);
    END IF;
    RETURN 'installed';
END
$$;
REVOKE EXECUTE ON FUNCTION public.ensure_query_stats() FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.tenant_query_stats(p_tenant_id uuid DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (tenant_id uuid, slug text, queryid bigint, query text, calls bigint,
               total_ms double precision, mean_ms double precision, max_ms double precision,
               rows bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF to_regclass('capliquify_stats.pg_stat_statements') IS NULL THEN
        RAISE EXCEPTION 'pg_stat_statements is not installed in this database (schema capliquify_stats)'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add pg_stat_statements to shared_preload_libraries, restart PostgreSQL, then run `capliquify migrate` as a superuser';
    END IF;
    RETURN QUERY
        SELECT t.id, t.slug::text, s.queryid, s.query, s.calls,
               s.total_exec_time, s.mean_exec_time, s.max_exec_time, s.rows
          FROM capliquify_stats.pg_stat_statements s
          JOIN pg_roles r ON r.oid = s.userid
          JOIN public.tenants t ON public.tenant_role_name(t.id) = r.rolname
         WHERE s.dbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
           AND (p_tenant_id IS NULL OR t.id = p_tenant_id)
         ORDER BY s.total_exec_time DESC
         LIMIT greatest(p_limit, 0);
END
$$;

SELECT public.ensure_query_stats();

-- Per-table and per-index statistics name every tenant's tables and count their rows.
DO $$
DECLARE
    v text;
    f regprocedure;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'not a superuser: pg_stat_user_tables and friends stay readable by every role (docs/security.md)';
        RETURN;
    END IF;
    FOR v IN SELECT format('%I.%I', schemaname, viewname) FROM pg_views
              WHERE schemaname = 'pg_catalog'
                AND (viewname ~ '^pg_stat(io)?_(all|user|sys|xact_all|xact_user|xact_sys)_(tables|indexes|sequences)$'
                     OR viewname IN ('pg_stat_user_functions', 'pg_stat_xact_user_functions'))
    LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', v);
    END LOOP;
    -- Functions are checked as the caller even inside a view: revoke the per-relation
    -- (and per-function) ones the views read, each taking one oid.
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace
                AND p.proname LIKE 'pg\_stat\_get\_%'
                AND p.proname NOT LIKE 'pg\_stat\_get\_db\_%'
                AND p.proname NOT LIKE 'pg\_stat\_get\_subscription%'
                AND p.pronargs = 1 AND p.proargtypes[0] = 'oid'::regtype
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
