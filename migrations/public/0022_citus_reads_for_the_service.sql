-- What the operators' console's Cluster page reads in Citus mode, readable by the service's
-- login (issue 17; docs/scaling.md "Citus mode"). The console runs as that login, which
-- Citus does not let see two things `capliquify cluster status` and `cluster tenants` read
-- as a superuser:
--
-- - shard sizes: `citus_shards` is open to everyone, but its sizes come from each worker,
--   asked as the current role, which looks every shard up by name in its tenant's schema;
--   the service's login has no USAGE on tenant schemas (it acts as a tenant's role), and
--   the workers give it no size (the page said 0 bytes; tests/it/citus.rs);
-- - `citus_stat_tenants`: Citus revokes it from PUBLIC and grants it to pg_monitor, which
--   would give the service every session's statements and every statistics view.
--
-- So two SECURITY DEFINER functions run Citus's own readers as their owner
-- (`capliquify migrate`'s role) and return only numbers: per shard of a tenant schema, its
-- table, worker and bytes; per tenant (Citus names a schema-based tenant by its schema), the
-- statement counts and CPU summed over the nodes. No statement text, no row of a tenant.
-- EXECUTE for the service's group alone (tenant roles are not in it). Both ask every node,
-- as the owner: a superuser, or a role in pg_monitor the workers let in, with USAGE on the
-- tenant schemas. Without Citus they return no row and name no Citus object.

CREATE FUNCTION public.citus_schema_shards()
RETURNS TABLE (table_name regclass, nodename text, nodeport integer, colocation_id integer,
               shard_size bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT table_name::regclass, nodename::text, nodeport::integer, colocation_id::integer,
                shard_size::bigint
           FROM pg_catalog.citus_shards
          WHERE citus_table_type = ''schema''';
END
$$;

CREATE FUNCTION public.citus_tenant_statements()
RETURNS TABLE (schema_name text, reads bigint, reads_last_period bigint, queries bigint,
               queries_last_period bigint, cpu_seconds float8, cpu_seconds_last_period float8)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT tenant_attribute,
                sum(read_count_in_this_period)::bigint,
                sum(read_count_in_last_period)::bigint,
                sum(query_count_in_this_period)::bigint,
                sum(query_count_in_last_period)::bigint,
                sum(cpu_usage_in_this_period)::float8,
                sum(cpu_usage_in_last_period)::float8
           FROM pg_catalog.citus_stat_tenants(true)
          GROUP BY tenant_attribute';
END
$$;

REVOKE EXECUTE ON FUNCTION public.citus_schema_shards(), public.citus_tenant_statements() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.citus_schema_shards(), public.citus_tenant_statements()
    TO capliquify_service;
