-- The fleet-wide checks serve keeps current, so that `capliquify doctor` reads no
-- registry-wide join by default (issue 16; docs/operations.md "Checking the fleet: doctor").
--
-- At 10,000 tenants doctor's own per-tenant work was already bounded (0020), but its report
-- still joined the whole registry with pg_namespace and with public.tenant_checks, five
-- times over: 3.9x its time at 100 tenants (docs/benchmarks.md, eighth scale run). Those
-- joins now run once each, in check_fleet(), which serve calls after each minute's slice of
-- tenant checks and doctor calls itself only when no fresh outcome is recorded (or when
-- asked to check now). What an operator expects to see change at once stays exact at once:
-- the tenants behind the newest version (one scan of the registry, no join: `migrate` then
-- `doctor` shows the fleet current), and the problems the tenants' last checks found
-- (through the partial index below, not every tenant's row).

-- One row: the outcome of the last check_fleet().
CREATE TABLE public.fleet_check (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_at      timestamptz NOT NULL,
    -- The last check by serve's minute loop: while it is recent, serve keeps the outcome
    -- current and doctor reads it instead of checking. A doctor's or a repair's own check
    -- updates the outcome but not this.
    serve_checked_at timestamptz,
    -- Live (not deleted) tenants.
    live            bigint NOT NULL,
    -- Live tenants whose schema does not exist: how many, and the first 20 by slug.
    missing_count   bigint NOT NULL,
    missing         text[] NOT NULL,
    -- tenant_% schemas neither a tenant's nor unclaimed in the schema pool.
    orphan_count    bigint NOT NULL,
    orphans         text[] NOT NULL,
    -- The tenants the per-tenant checks cover (live, on this cluster, not moving), how many
    -- of them were never checked, and the oldest of their last checks.
    checkable       bigint NOT NULL,
    never_checked   bigint NOT NULL,
    oldest_check    timestamptz
);
COMMENT ON TABLE public.fleet_check IS
    'The outcome of the last check_fleet(): registry against schemas, and check coverage';

-- Every registry-wide join of doctor's report, run once: the live tenants against the
-- tenant_% schemas, the schemas against the registry (tenants and the schema pool), and the
-- checkable tenants against their last checks. Records the outcome and returns it;
-- p_by_serve marks serve's minute loop. Three statements rather than one full join: in
-- Citus mode the registry is a Citus local table (0019), and Citus plans a join of it with
-- pg_namespace only with the registry on the outer side.
CREATE FUNCTION public.check_fleet(p_by_serve boolean DEFAULT false)
RETURNS public.fleet_check
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_live          bigint;
    v_missing_count bigint;
    v_missing       text[];
    v_orphan_count  bigint;
    v_orphans       text[];
    v_checkable     bigint;
    v_never         bigint;
    v_oldest        timestamptz;
    v_now           timestamptz;
    v_row           public.fleet_check;
BEGIN
    SELECT count(*),
           count(*) FILTER (WHERE n.oid IS NULL),
           coalesce((array_agg(t.slug || ': schema ' || t.schema_name || ' missing' ORDER BY t.slug)
                         FILTER (WHERE n.oid IS NULL))[1:20], '{}')
      INTO v_live, v_missing_count, v_missing
      FROM public.tenants t
      LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
     WHERE t.deleted_at IS NULL;
    SELECT count(*), coalesce((array_agg(o.nspname ORDER BY o.nspname))[1:20], '{}')
      INTO v_orphan_count, v_orphans
      FROM (SELECT n.nspname::text AS nspname FROM pg_namespace n
             WHERE n.nspname LIKE 'tenant\_%'
               AND NOT EXISTS (SELECT 1 FROM public.tenants t WHERE t.schema_name = n.nspname)
               AND NOT EXISTS (SELECT 1 FROM public.tenant_schema_pool p
                                WHERE p.schema_name = n.nspname)) o;
    SELECT count(*), count(*) FILTER (WHERE c.tenant_id IS NULL), min(c.checked_at)
      INTO v_checkable, v_never, v_oldest
      FROM public.tenants t
      LEFT JOIN public.tenant_checks c ON c.tenant_id = t.id
     WHERE t.deleted_at IS NULL AND t.cluster = 'home' AND t.moving_to IS NULL;
    v_now := clock_timestamp();
    INSERT INTO public.fleet_check AS f
        (id, checked_at, serve_checked_at, live, missing_count, missing, orphan_count, orphans,
         checkable, never_checked, oldest_check)
    VALUES (true, v_now, CASE WHEN p_by_serve THEN v_now END, v_live, v_missing_count,
            v_missing, v_orphan_count, v_orphans, v_checkable, v_never, v_oldest)
    ON CONFLICT (id) DO UPDATE
        SET checked_at = excluded.checked_at,
            serve_checked_at = coalesce(excluded.serve_checked_at, f.serve_checked_at),
            live = excluded.live,
            missing_count = excluded.missing_count, missing = excluded.missing,
            orphan_count = excluded.orphan_count, orphans = excluded.orphans,
            checkable = excluded.checkable, never_checked = excluded.never_checked,
            oldest_check = excluded.oldest_check
    RETURNING f.* INTO v_row;
    RETURN v_row;
END
$$;

-- doctor's list of what the tenants' last checks found reads only the tenants with a
-- problem (none, when all is well), not every tenant's row.
CREATE INDEX idx_tenant_checks_with_problems ON public.tenant_checks (tenant_id)
    WHERE problems <> '{}';

REVOKE EXECUTE ON FUNCTION public.check_fleet(boolean) FROM PUBLIC;
-- serve records the fleet's outcome a minute, and the console's System page shows it;
-- bookkeeping only (slugs, schema names, counts).
GRANT EXECUTE ON FUNCTION public.check_fleet(boolean) TO capliquify_service;
GRANT SELECT ON public.fleet_check TO capliquify_service;
