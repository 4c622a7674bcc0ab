-- The tenant-migration catalog and the SQL functions operators call from psql
-- (create_tenant_schema, delete_tenant_schema, list_tenant_schemas, verify_tenant_isolation).
-- The service calls the same functions, so there is one way a tenant schema comes to be.

-- Every tenant migration (migrations/tenant/*.sql), as `capliquify migrate` last synced it.
-- The checksum is SHA-384 of the SQL text, the same digest sqlx uses for its own migrations;
-- the CHECK makes a hand-edited row that no longer matches its checksum impossible.
CREATE TABLE public.tenant_migrations (
    version       bigint PRIMARY KEY CHECK (version > 0),
    description   text NOT NULL,
    sql           text NOT NULL,
    checksum      bytea NOT NULL CHECK (checksum = sha384(convert_to(sql, 'UTF8'))),
    installed_at  timestamptz NOT NULL DEFAULT now()
);

-- DESIGN.md §6: an operator-registered schema name must match this rule; generated ones
-- (tenant_<32 hex>) always do.
CREATE FUNCTION public.is_valid_tenant_schema_name(p_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT p_name ~ '^tenant_[a-z0-9_]{1,56}$'
$$;

CREATE FUNCTION public.assert_tenant_schema_name(p_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT coalesce(public.is_valid_tenant_schema_name(p_name), false) THEN
        RAISE EXCEPTION 'invalid tenant schema name "%"', p_name
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'tenant schema names match ^tenant_[a-z0-9_]{1,56}$';
    END IF;
END
$$;

-- The tables every up-to-date tenant schema has. Kept beside the tenant migrations: a test
-- compares it with a freshly created schema, so it cannot silently drift.
CREATE FUNCTION public.tenant_required_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['api_credentials', 'companies', 'forecasts', 'inventory', 'products', 'sales',
                 'scenarios', 'schema_migrations', 'user_preferences', 'working_capital_metrics']
$$;

-- Brings one existing tenant schema to the newest catalog version (or to p_target), inside
-- the caller's transaction, and returns how many migrations it applied. Concurrent callers
-- for the same schema are serialised by an advisory lock, so two overlapping
-- `capliquify migrate` runs apply each migration once.
CREATE FUNCTION public.migrate_tenant_schema(p_schema text, p_target bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    m        record;
    applied  integer := 0;
    current  bigint;
    drifted  bigint;
BEGIN
    PERFORM public.assert_tenant_schema_name(p_schema);
    IF NOT EXISTS (SELECT 1 FROM public.tenant_migrations) THEN
        RAISE EXCEPTION 'the tenant migration catalog is empty'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'run `capliquify migrate` once to load it';
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || p_schema, 0));

    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = p_schema) THEN
        RAISE EXCEPTION 'tenant schema "%" does not exist', p_schema
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'create it with create_tenant_schema(tenant id) or `capliquify tenant repair`';
    END IF;

    -- The schema's own record of what it has applied (DESIGN.md §4).
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I.schema_migrations (
             version     bigint PRIMARY KEY,
             description text NOT NULL,
             checksum    bytea NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now())', p_schema);

    EXECUTE format(
        'SELECT s.version FROM %I.schema_migrations s
           LEFT JOIN public.tenant_migrations c USING (version)
          WHERE c.checksum IS DISTINCT FROM s.checksum
          ORDER BY s.version LIMIT 1', p_schema)
        INTO drifted;
    IF drifted IS NOT NULL THEN
        RAISE EXCEPTION 'tenant schema "%" applied migration % with a checksum the catalog does not have', p_schema, drifted
            USING ERRCODE = 'data_exception',
                  HINT = 'an applied migration was edited or removed; restore the original file';
    END IF;

    EXECUTE format('SELECT coalesce(max(version), 0) FROM %I.schema_migrations', p_schema)
        INTO current;

    -- Transaction-scoped and undone when this function returns (it has its own SET clause).
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    FOR m IN
        SELECT version, description, sql, checksum
          FROM public.tenant_migrations
         WHERE version > current AND (p_target IS NULL OR version <= p_target)
         ORDER BY version
    LOOP
        EXECUTE m.sql;
        EXECUTE format('INSERT INTO %I.schema_migrations (version, description, checksum)
                        VALUES ($1, $2, $3)', p_schema)
            USING m.version, m.description, m.checksum;
        current := m.version;
        applied := applied + 1;
    END LOOP;

    UPDATE public.tenants SET schema_version = current
     WHERE schema_name = p_schema AND schema_version IS DISTINCT FROM current;
    RETURN applied;
END
$$;

-- Creates the tenant's schema with every tenant migration applied and returns its name.
-- Uses the schema_name registered in public.tenants for that id when there is one, else
-- tenant_<uuid without dashes>. Atomic: it runs in the caller's transaction, so a failure
-- leaves no schema behind. A schema that already exists is an error (SQLSTATE 42P06), never
-- silently reused: use migrate_tenant_schema() or `capliquify tenant repair` for that.
CREATE FUNCTION public.create_tenant_schema(p_tenant_id uuid) RETURNS varchar
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_schema text;
BEGIN
    SELECT schema_name INTO v_schema FROM public.tenants WHERE id = p_tenant_id;
    IF NOT FOUND THEN
        v_schema := 'tenant_' || replace(p_tenant_id::text, '-', '');
    END IF;
    PERFORM public.assert_tenant_schema_name(v_schema);
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = v_schema) THEN
        RAISE EXCEPTION 'schema "%" already exists', v_schema
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'to finish a half-migrated schema run `capliquify tenant repair SLUG`';
    END IF;
    EXECUTE format('CREATE SCHEMA %I', v_schema);
    PERFORM public.migrate_tenant_schema(v_schema);
    RETURN v_schema;
END
$$;

-- Drops the tenant's schema and everything in it; false when there is no such schema.
-- Refuses while the tenant is registered and not soft-deleted: data is never dropped by
-- accident (soft-delete first: `capliquify tenant delete SLUG`).
CREATE FUNCTION public.delete_tenant_schema(p_tenant_id uuid) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_schema  text;
    v_deleted timestamptz;
    v_slug    text;
BEGIN
    SELECT schema_name, deleted_at, slug INTO v_schema, v_deleted, v_slug
      FROM public.tenants WHERE id = p_tenant_id FOR UPDATE;
    IF FOUND THEN
        IF v_deleted IS NULL THEN
            RAISE EXCEPTION 'tenant "%" is live; refusing to drop schema "%"', v_slug, v_schema
                USING ERRCODE = 'object_in_use',
                      HINT = 'soft-delete the tenant first (UPDATE tenants SET deleted_at = now() or `capliquify tenant delete`)';
        END IF;
    ELSE
        v_schema := 'tenant_' || replace(p_tenant_id::text, '-', '');
    END IF;
    IF NOT public.is_valid_tenant_schema_name(v_schema)
       OR NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = v_schema) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || v_schema, 0));
    EXECUTE format('DROP SCHEMA %I CASCADE', v_schema);
    UPDATE public.tenants SET schema_version = NULL WHERE id = p_tenant_id;
    RETURN true;
END
$$;

CREATE FUNCTION public.list_tenant_schemas()
RETURNS TABLE (schema_name varchar, table_count bigint, size_mb numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT n.nspname::varchar,
           count(c.oid),
           round(coalesce(sum(pg_total_relation_size(c.oid)), 0) / 1048576.0, 2)
      FROM pg_namespace n
      LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
     WHERE n.nspname LIKE 'tenant\_%'
     GROUP BY n.nspname
     ORDER BY n.nspname
$$;

-- The guide's verification summary (003_testing_queries.sql).
CREATE FUNCTION public.tenancy_summary()
RETURNS TABLE (check_name text, count bigint, expected text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT 'Public Schema Tables',
           (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
               AND tablename IN ('tenants', 'users', 'subscriptions', 'audit_logs')),
           '4 expected'
    UNION ALL
    SELECT 'Tenant Schemas Created',
           (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'),
           '(will increase as tenants are created)'
    UNION ALL
    SELECT 'Tenants Registered',
           (SELECT count(*) FROM public.tenants),
           '(will increase as tenants sign up)'
$$;

-- Real isolation checks; every row is PASS or FAIL with the offenders named (first 20).
CREATE FUNCTION public.verify_tenant_isolation()
RETURNS TABLE (test_name text, result text, details text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_latest   bigint;
    v_missing  text[];
    v_bad      text[];
BEGIN
    -- 1. The shared tables exist.
    SELECT array_agg(t ORDER BY t) INTO v_missing
      FROM unnest(ARRAY['tenants', 'users', 'subscriptions', 'audit_logs', 'tenant_migrations']) t
     WHERE to_regclass('public.' || t) IS NULL;
    test_name := 'public_tables_present';
    result := CASE WHEN v_missing IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_missing IS NULL THEN 'tenants, users, subscriptions, audit_logs, tenant_migrations'
                    ELSE 'missing: ' || array_to_string(v_missing, ', ') END;
    RETURN NEXT;

    -- 2. Every live tenant has its schema, at the newest version, with every table.
    SELECT max(version) INTO v_latest FROM public.tenant_migrations;
    SELECT array_agg(problem ORDER BY problem) INTO v_bad FROM (
        SELECT t.slug || ': schema ' || t.schema_name || ' missing' AS problem
          FROM public.tenants t
         WHERE t.deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = t.schema_name)
        UNION ALL
        SELECT t.slug || ': at version ' || coalesce(t.schema_version::text, 'none') || ' of ' || coalesce(v_latest::text, 'none')
          FROM public.tenants t
         WHERE t.deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = t.schema_name)
           AND t.schema_version IS DISTINCT FROM v_latest
        UNION ALL
        SELECT t.slug || ': missing tables ' || string_agg(req, ', ' ORDER BY req)
          FROM public.tenants t
          JOIN pg_namespace n ON n.nspname = t.schema_name
         CROSS JOIN unnest(public.tenant_required_tables()) req
         WHERE t.deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_class c
                            WHERE c.relnamespace = n.oid AND c.relname = req AND c.relkind IN ('r', 'p'))
         GROUP BY t.slug
        LIMIT 20) p;
    test_name := 'tenant_schemas_current';
    result := CASE WHEN v_bad IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_bad IS NULL
                    THEN (SELECT count(*) FROM public.tenants WHERE deleted_at IS NULL)
                         || ' live tenant(s) at version ' || coalesce(v_latest::text, 'none')
                    ELSE array_to_string(v_bad, '; ') END;
    RETURN NEXT;

    -- 3. No tenant_% schema without its registry row.
    SELECT array_agg(n.nspname::text ORDER BY n.nspname) INTO v_bad FROM (
        SELECT nspname FROM pg_namespace n
         WHERE n.nspname LIKE 'tenant\_%'
           AND NOT EXISTS (SELECT 1 FROM public.tenants t WHERE t.schema_name = n.nspname)
         ORDER BY nspname LIMIT 20) n;
    test_name := 'no_orphan_schemas';
    result := CASE WHEN v_bad IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_bad IS NULL THEN 'every tenant_% schema is registered'
                    ELSE 'unregistered: ' || array_to_string(v_bad, ', ') END;
    RETURN NEXT;

    -- 4. Nothing in a tenant schema points into another schema: foreign keys, views,
    --    and column types defined outside the schema and pg_catalog.
    SELECT array_agg(x ORDER BY x) INTO v_bad FROM (
        SELECT n.nspname || '.' || c.relname || ' constraint ' || con.conname || ' -> ' || rn.nspname || '.' || rc.relname AS x
          FROM pg_constraint con
          JOIN pg_class c ON c.oid = con.conrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_class rc ON rc.oid = con.confrelid
          JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE con.contype = 'f' AND n.nspname LIKE 'tenant\_%' AND rn.oid <> n.oid
        UNION ALL
        SELECT DISTINCT n.nspname || '.' || v.relname || ' view -> ' || rn.nspname || '.' || ref.relname
          FROM pg_class v
          JOIN pg_namespace n ON n.oid = v.relnamespace
          JOIN pg_rewrite r ON r.ev_class = v.oid
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                          AND d.refclassid = 'pg_class'::regclass
          JOIN pg_class ref ON ref.oid = d.refobjid
          JOIN pg_namespace rn ON rn.oid = ref.relnamespace
         WHERE v.relkind IN ('v', 'm') AND n.nspname LIKE 'tenant\_%'
           AND rn.oid <> n.oid AND rn.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL
        SELECT n.nspname || '.' || c.relname || '.' || a.attname || ' type -> ' || tn.nspname || '.' || ty.typname
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_type ty ON ty.oid = a.atttypid
          JOIN pg_namespace tn ON tn.oid = ty.typnamespace
         WHERE n.nspname LIKE 'tenant\_%' AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relkind IN ('r', 'p', 'v', 'm')
           AND tn.oid <> n.oid AND tn.nspname NOT IN ('pg_catalog', 'information_schema')
        LIMIT 20) refs;
    test_name := 'no_cross_schema_references';
    result := CASE WHEN v_bad IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_bad IS NULL THEN 'no foreign key, view or column type leaves its tenant schema'
                    ELSE array_to_string(v_bad, '; ') END;
    RETURN NEXT;

    -- 5. Nothing in a tenant schema is granted to PUBLIC (a NULL proacl means PUBLIC may
    --    EXECUTE a function, so those count too).
    SELECT array_agg(x ORDER BY x) INTO v_bad FROM (
        SELECT 'schema ' || n.nspname AS x
          FROM pg_namespace n
         WHERE n.nspname LIKE 'tenant\_%'
           AND EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = 0)
        UNION ALL
        SELECT n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname LIKE 'tenant\_%'
           AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0)
        UNION ALL
        SELECT n.nspname || '.' || p.proname || '()'
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname LIKE 'tenant\_%'
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
        LIMIT 20) g;
    test_name := 'no_public_grants';
    result := CASE WHEN v_bad IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_bad IS NULL THEN 'no tenant object is granted to PUBLIC'
                    ELSE 'granted to PUBLIC: ' || array_to_string(v_bad, ', ') END;
    RETURN NEXT;
END
$$;
