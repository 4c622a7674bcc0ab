-- Tenant checks that cost the same at 10,000 tenants as at 100 (issue 16; docs/operations.md
-- "Checking the fleet: doctor").
--
-- verify_tenant_isolation() and doctor's role and history checks read every tenant's
-- catalog rows: their cost grows with the fleet (doctor took 2 s at 2,000 tenants, 11x its
-- time at 100). Each tenant's own checks now run for a bounded slice of tenants at a time —
-- the least recently checked first — through indexed catalog paths only, and their outcome
-- is kept in public.tenant_checks, so a problem found once is reported by every later
-- doctor until a check of that tenant finds it gone. `capliquify doctor` checks one slice
-- (100 tenants), serve checks one slice a minute in the background, and
-- `capliquify doctor --full` checks every tenant, slice after slice. The guide's
-- verify_tenant_isolation() is unchanged and still checks everything in one statement.

-- The tenant list's newest-first pages (`tenant list`, `monitor tenants`, the console) walk
-- this index instead of sorting the registry.
CREATE INDEX idx_tenants_created_slug ON public.tenants (created_at, slug);

CREATE TABLE public.tenant_checks (
    tenant_id  uuid PRIMARY KEY REFERENCES public.tenants (id) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL,
    -- What the last check found; empty when it found nothing wrong.
    problems   text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE public.tenant_checks IS
    'The last outcome of check_tenant_schema() per tenant, written by verify_tenant_slice()';

-- Everything wrong with one tenant's schema, as one line per problem (none when all is
-- well). Every catalog read goes through an index — the schema's objects are found from
-- the namespace's pg_depend entries, as grant_tenant_role does since 0012, because pg_class
-- has no index on relnamespace — so the cost does not depend on how many tenants exist.
-- The checks are those of verify_tenant_isolation() (schema, version, tables, references
-- out of the schema, PUBLIC grants) and of doctor (the tenant role's rights, grants to any
-- other role, the applied history against the catalog), for this tenant only.
CREATE FUNCTION public.check_tenant_schema(p_tenant_id uuid)
RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_tenant  public.tenants%ROWTYPE;
    v_ns      oid;
    v_owner   oid;
    v_role    name;
    v_role_id oid;
    v_latest  bigint;
    v_drift   bigint;
    v_rels    oid[];
    v_procs   oid[];
BEGIN
    SELECT * INTO v_tenant FROM public.tenants WHERE id = p_tenant_id;
    IF NOT FOUND THEN
        RETURN NEXT 'not registered';
        RETURN;
    END IF;
    SELECT n.oid, n.nspowner INTO v_ns, v_owner
      FROM pg_namespace n WHERE n.nspname = v_tenant.schema_name;
    IF v_ns IS NULL THEN
        RETURN NEXT 'schema ' || v_tenant.schema_name || ' missing';
        RETURN;
    END IF;
    SELECT max(version) INTO v_latest FROM public.tenant_migrations;
    IF v_tenant.schema_version IS DISTINCT FROM v_latest THEN
        RETURN NEXT 'at version ' || coalesce(v_tenant.schema_version::text, 'none')
                    || ' of ' || coalesce(v_latest::text, 'none');
    END IF;
    RETURN QUERY
        SELECT 'missing tables ' || string_agg(req, ', ' ORDER BY req)
          FROM unnest(public.tenant_required_tables()) req
         WHERE NOT EXISTS (SELECT 1 FROM pg_class c
                            WHERE c.relname = req AND c.relnamespace = v_ns AND c.relkind IN ('r', 'p'))
        HAVING count(*) > 0;

    -- The schema's relations and functions (pg_depend_reference_index).
    SELECT coalesce(array_agg(d.objid) FILTER (WHERE d.classid = 'pg_class'::regclass), '{}'),
           coalesce(array_agg(d.objid) FILTER (WHERE d.classid = 'pg_proc'::regclass), '{}')
      INTO v_rels, v_procs
      FROM pg_depend d
     WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = v_ns AND d.deptype = 'n'
       AND d.classid IN ('pg_class'::regclass, 'pg_proc'::regclass);

    -- References out of the schema: foreign keys, views, column types.
    RETURN QUERY
        SELECT 'constraint ' || c.relname || '.' || con.conname || ' -> ' || rn.nspname || '.' || rc.relname
          FROM unnest(v_rels) o(objid)
          JOIN pg_class c ON c.oid = o.objid
          JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'f'
          JOIN pg_class rc ON rc.oid = con.confrelid
          JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE rc.relnamespace <> v_ns
        UNION ALL
        SELECT DISTINCT 'view ' || v.relname || ' -> ' || rn.nspname || '.' || ref.relname
          FROM unnest(v_rels) o(objid)
          JOIN pg_class v ON v.oid = o.objid AND v.relkind IN ('v', 'm')
          JOIN pg_rewrite r ON r.ev_class = v.oid
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                          AND d.refclassid = 'pg_class'::regclass
          JOIN pg_class ref ON ref.oid = d.refobjid
          JOIN pg_namespace rn ON rn.oid = ref.relnamespace
         WHERE rn.oid <> v_ns AND rn.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL
        SELECT 'column ' || c.relname || '.' || a.attname || ' type -> ' || tn.nspname || '.' || ty.typname
          FROM unnest(v_rels) o(objid)
          JOIN pg_class c ON c.oid = o.objid AND c.relkind IN ('r', 'p', 'v', 'm')
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          JOIN pg_type ty ON ty.oid = a.atttypid
          JOIN pg_namespace tn ON tn.oid = ty.typnamespace
         WHERE tn.oid <> v_ns AND tn.nspname NOT IN ('pg_catalog', 'information_schema');

    -- Grants: nothing to PUBLIC, nothing on the schema or its relations to any role but the
    -- owner and the tenant's own (an unclaimed pooled schema is not checked here).
    v_role := public.tenant_role_name(v_tenant.id);
    v_role_id := to_regrole(quote_ident(v_role));
    RETURN QUERY
        SELECT 'granted to ' || coalesce(r.rolname, 'PUBLIC') || ': '
               || string_agg(DISTINCT g.object, ', ' ORDER BY g.object)
          FROM (SELECT 'schema ' || v_tenant.schema_name AS object, v_owner AS owner, a.grantee
                  FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
                 WHERE n.oid = v_ns
                UNION ALL
                SELECT c.relname::text, c.relowner, a.grantee
                  FROM unnest(v_rels) o(objid)
                  JOIN pg_class c ON c.oid = o.objid
                 CROSS JOIN LATERAL aclexplode(c.relacl) a) g
          LEFT JOIN pg_roles r ON r.oid = g.grantee
         WHERE g.grantee <> g.owner AND g.grantee IS DISTINCT FROM v_role_id
         GROUP BY r.rolname
        UNION ALL
        SELECT 'functions granted to PUBLIC: ' || string_agg(p.proname || '()', ', ' ORDER BY p.proname)
          FROM unnest(v_procs) o(objid)
          JOIN pg_proc p ON p.oid = o.objid
         WHERE (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
        HAVING count(*) > 0;

    -- The tenant's role and its rights (a tenant on another cluster has its role there).
    IF v_tenant.cluster = 'home' AND v_tenant.moving_to IS NULL THEN
        IF v_role_id IS NULL THEN
            RETURN NEXT 'role ' || v_role || ' is missing';
        ELSIF NOT has_schema_privilege(v_role_id, v_ns, 'USAGE') THEN
            RETURN NEXT 'the tenant role cannot use schema ' || v_tenant.schema_name;
        ELSE
            RETURN QUERY
                SELECT 'no read/write grant on ' || string_agg(c.relname, ', ' ORDER BY c.relname)
                  FROM unnest(v_rels) o(objid)
                  JOIN pg_class c ON c.oid = o.objid AND c.relkind IN ('r', 'p')
                 WHERE c.relname <> 'schema_migrations'
                   AND NOT (has_table_privilege(v_role_id, c.oid, 'SELECT')
                            AND has_table_privilege(v_role_id, c.oid, 'INSERT')
                            AND has_table_privilege(v_role_id, c.oid, 'UPDATE')
                            AND has_table_privilege(v_role_id, c.oid, 'DELETE'))
                HAVING count(*) > 0;
        END IF;
    END IF;

    -- The applied history against the catalog: a version whose checksum the catalog lacks
    -- means someone edited the schema's history or an applied migration.
    IF EXISTS (SELECT 1 FROM pg_class c
                WHERE c.relname = 'schema_migrations' AND c.relnamespace = v_ns) THEN
        EXECUTE format('SELECT min(s.version) FROM %I.schema_migrations s
                          LEFT JOIN public.tenant_migrations c USING (version)
                         WHERE c.checksum IS DISTINCT FROM s.checksum', v_tenant.schema_name)
           INTO v_drift;
        IF v_drift IS NOT NULL THEN
            RETURN NEXT 'migration ' || v_drift || ' applied with a checksum the catalog lacks';
        END IF;
    END IF;
END
$$;

-- Checks the p_limit live tenants of this cluster checked longest ago (never checked first)
-- with check_tenant_schema(), records each outcome in tenant_checks, and returns the
-- tenants it checked with what it found (a tenant without problems has one row with a NULL
-- problem). One transaction touches at most p_limit schemas, so it holds few locks.
CREATE FUNCTION public.verify_tenant_slice(p_limit integer DEFAULT 100)
RETURNS TABLE (slug text, problem text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_tenant   record;
    v_problems text[];
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'the slice must hold at least one tenant, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_tenant IN
        SELECT t.id, t.slug::text AS slug
          FROM public.tenants t
          LEFT JOIN public.tenant_checks c ON c.tenant_id = t.id
         WHERE t.deleted_at IS NULL AND t.cluster = 'home' AND t.moving_to IS NULL
         ORDER BY c.checked_at NULLS FIRST, t.slug
         LIMIT p_limit
    LOOP
        v_problems := ARRAY(SELECT public.check_tenant_schema(v_tenant.id));
        INSERT INTO public.tenant_checks AS c (tenant_id, checked_at, problems)
        VALUES (v_tenant.id, clock_timestamp(), v_problems)
        ON CONFLICT (tenant_id) DO UPDATE
            SET checked_at = excluded.checked_at, problems = excluded.problems;
        slug := v_tenant.slug;
        IF cardinality(v_problems) = 0 THEN
            problem := NULL;
            RETURN NEXT;
        END IF;
        FOREACH problem IN ARRAY v_problems LOOP
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION public.check_tenant_schema(uuid), public.verify_tenant_slice(integer)
    FROM PUBLIC;
-- serve checks a slice a minute; what it learns is bookkeeping only (slugs and problems).
GRANT EXECUTE ON FUNCTION public.verify_tenant_slice(integer) TO capliquify_service;
GRANT SELECT ON public.tenant_checks TO capliquify_service;
