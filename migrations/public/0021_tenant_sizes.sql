-- Tenant sizes that cost the same to rank at 10,000 tenants as at 100 (issue 16;
-- docs/operations.md "Monitoring").
--
-- `monitor sizes` ranked every tenant schema by the page counts pg_class keeps: no file
-- opened, but a read of all of pg_class (~560,000 rows at 10,000 tenants), 5-8x its time at
-- 100 tenants. Sizes are now measured a slice of tenants at a time — the least recently
-- measured first, as doctor's checks are (0020) — and kept in public.tenant_sizes, ranked by
-- an index. serve measures a slice a minute; `capliquify monitor sizes` measures one before
-- it ranks and then measures its candidates again, so the figures it shows are exact.
-- Also recheck_tenant(), which `tenant repair` calls so doctor sees the repair at once.

CREATE TABLE public.tenant_sizes (
    tenant_id   uuid PRIMARY KEY REFERENCES public.tenants (id) ON DELETE CASCADE,
    measured_at timestamptz NOT NULL,
    table_count integer NOT NULL,
    -- Tables with their indexes and TOAST (pg_total_relation_size), as the guide measures.
    total_bytes bigint NOT NULL
);
CREATE INDEX idx_tenant_sizes_total_bytes ON public.tenant_sizes (total_bytes DESC);
COMMENT ON TABLE public.tenant_sizes IS
    'The last size measured per tenant schema, written by measure_tenant_slice()';

-- One schema's tables and their total size (tables, indexes, TOAST); no row when the schema
-- does not exist. The tables are found from the namespace's pg_depend entries (an index),
-- not by scanning pg_class, which has no index on relnamespace.
CREATE FUNCTION public.tenant_schema_size(p_schema text)
RETURNS TABLE (table_count integer, total_bytes bigint)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT count(c.oid)::integer, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
      FROM pg_namespace n
      LEFT JOIN pg_depend d ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid
                           AND d.deptype = 'n' AND d.classid = 'pg_class'::regclass
      LEFT JOIN pg_class c ON c.oid = d.objid AND c.relkind IN ('r', 'p')
     WHERE n.nspname = p_schema
     GROUP BY n.oid
$$;

-- Measures the p_limit live tenants of this cluster measured longest ago (never measured
-- first), records each in tenant_sizes, and returns how many it measured. A tenant whose
-- schema is missing is recorded with no tables and no bytes (doctor reports the schema).
CREATE FUNCTION public.measure_tenant_slice(p_limit integer DEFAULT 100)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_tenant record;
    v_tables integer;
    v_bytes  bigint;
    v_done   integer := 0;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'the slice must hold at least one tenant, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_tenant IN
        SELECT t.id, t.schema_name::text AS schema_name
          FROM public.tenants t
          LEFT JOIN public.tenant_sizes s ON s.tenant_id = t.id
         WHERE t.deleted_at IS NULL AND t.cluster = 'home' AND t.moving_to IS NULL
         ORDER BY s.measured_at NULLS FIRST, t.slug
         LIMIT p_limit
    LOOP
        v_tables := 0;
        v_bytes := 0;
        SELECT m.table_count, m.total_bytes INTO v_tables, v_bytes
          FROM public.tenant_schema_size(v_tenant.schema_name) m;
        INSERT INTO public.tenant_sizes AS s (tenant_id, measured_at, table_count, total_bytes)
        VALUES (v_tenant.id, clock_timestamp(), coalesce(v_tables, 0), coalesce(v_bytes, 0))
        ON CONFLICT (tenant_id) DO UPDATE
            SET measured_at = excluded.measured_at, table_count = excluded.table_count,
                total_bytes = excluded.total_bytes;
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END
$$;

-- Checks one tenant now and records the outcome, as verify_tenant_slice() (0020) does for a
-- slice: `tenant repair` calls it once it has repaired, so doctor stops reporting what the
-- repair fixed instead of waiting for the tenant's turn. Returns what the check found.
CREATE FUNCTION public.recheck_tenant(p_tenant_id uuid)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_problems text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.tenants WHERE id = p_tenant_id) THEN
        RAISE EXCEPTION 'no tenant has id %', p_tenant_id USING ERRCODE = 'no_data_found';
    END IF;
    v_problems := ARRAY(SELECT public.check_tenant_schema(p_tenant_id));
    INSERT INTO public.tenant_checks AS c (tenant_id, checked_at, problems)
    VALUES (p_tenant_id, clock_timestamp(), v_problems)
    ON CONFLICT (tenant_id) DO UPDATE
        SET checked_at = excluded.checked_at, problems = excluded.problems;
    RETURN v_problems;
END
$$;

REVOKE EXECUTE ON FUNCTION public.tenant_schema_size(text), public.measure_tenant_slice(integer),
    public.recheck_tenant(uuid) FROM PUBLIC;
-- serve measures a slice a minute, and the console and the admin API show the largest
-- tenants (measured again as they are shown); sizes are bookkeeping, no tenant data.
GRANT EXECUTE ON FUNCTION public.tenant_schema_size(text), public.measure_tenant_slice(integer)
    TO capliquify_service;
-- The console's repair act runs as the service role.
GRANT EXECUTE ON FUNCTION public.recheck_tenant(uuid) TO capliquify_service;
GRANT SELECT ON public.tenant_sizes TO capliquify_service;
