-- A pool of pre-provisioned, unassigned tenant schemas (issue 16; docs/scaling.md
-- "The schema pool").
--
-- Making a tenant schema runs every tenant migration's DDL and creates and grants the
-- tenant's role: tens of milliseconds, more on a busy server. A sign-up should not wait for
-- it. The service keeps a few schemas made ahead (`CAPLIQUIFY_SCHEMA_POOL_SIZE`), each for
-- a tenant id chosen in advance — a schema's name and its role's name are derived from the
-- tenant id — and a sign-up claims one in its own transaction:
--
--   SELECT public.reserve_pooled_schema();          -- a pooled tenant id, row-locked, or NULL
--   INSERT INTO public.tenants (id, schema_name, …)  -- the tenant, with that id
--        VALUES (<that id>, 'tenant_' || <its 32 hex digits>, …);
--   SELECT public.create_tenant_schema(<that id>);  -- adopts the pooled schema
--
-- `reserve_pooled_schema` locks the row it returns (FOR UPDATE SKIP LOCKED), so concurrent
-- sign-ups never get the same schema; `create_tenant_schema` deletes the pool row, brings the
-- schema to the newest migration and records its version on the tenant. If the sign-up
-- rolls back, the row and its schema go back to the pool. With an empty pool (NULL), the
-- tenant gets a fresh id and `create_tenant_schema` makes the schema as before: the pool
-- only ever saves time. The guide's way (insert a tenant, then create_tenant_schema) is
-- unchanged.
--
-- `capliquify migrate` brings the pool's schemas to the newest migration with the tenants'
-- (migrate_pooled_schema); a pooled schema that is behind anyway is migrated when claimed.

CREATE TABLE public.tenant_schema_pool (
    tenant_id       uuid PRIMARY KEY,
    schema_name     varchar(63) NOT NULL UNIQUE
                    CHECK (schema_name = 'tenant_' || replace(tenant_id::text, '-', '')),
    -- The newest tenant migration the schema has applied (its own schema_migrations).
    schema_version  bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_schema_pool_created_at ON public.tenant_schema_pool (created_at);
REVOKE ALL ON public.tenant_schema_pool FROM PUBLIC;

-- Adds one schema to the pool unless it already holds p_target; returns the new schema's
-- name, or NULL when the pool is full. Fillers (every service instance, `capliquify
-- schema-pool fill`) take turns on an advisory lock, so together they never overfill it;
-- sign-ups never wait for that lock.
CREATE FUNCTION public.add_pooled_schema(p_target integer) RETURNS varchar
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_id      uuid;
    v_schema  text;
    v_version bigint;
BEGIN
    IF p_target IS NULL OR p_target < 0 THEN
        RAISE EXCEPTION 'the schema pool''s size must be 0 or more, not %', p_target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema-pool', 0));
    IF (SELECT count(*) FROM public.tenant_schema_pool) >= p_target THEN
        RETURN NULL;
    END IF;
    v_id := gen_random_uuid();
    v_schema := public.create_tenant_schema(v_id);
    EXECUTE format('SELECT max(version) FROM %I.schema_migrations', v_schema) INTO v_version;
    INSERT INTO public.tenant_schema_pool (tenant_id, schema_name, schema_version)
    VALUES (v_id, v_schema, v_version);
    RETURN v_schema;
END
$$;

-- The oldest pooled tenant id no other transaction holds, locked until this transaction
-- ends; NULL when there is none. Register the tenant with this id, then call
-- create_tenant_schema(id) in the same transaction.
CREATE FUNCTION public.reserve_pooled_schema() RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT tenant_id FROM public.tenant_schema_pool
     ORDER BY created_at, tenant_id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
$$;

-- Takes one schema out of the pool and drops it with its role; returns its name, or NULL
-- when the pool is empty (or every row is being claimed). `capliquify schema-pool drain`.
CREATE FUNCTION public.drop_pooled_schema() RETURNS varchar
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_id     uuid;
    v_schema text;
BEGIN
    SELECT tenant_id, schema_name INTO v_id, v_schema FROM public.tenant_schema_pool
     ORDER BY created_at DESC, tenant_id
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    DELETE FROM public.tenant_schema_pool WHERE tenant_id = v_id;
    -- No registry row: delete_tenant_schema drops the schema named after the id, and its role.
    PERFORM public.delete_tenant_schema(v_id);
    RETURN v_schema;
END
$$;

-- Applies pending tenant migrations (up to p_target) to one pooled schema and records its
-- version in the pool. NULL when the schema is not in the pool, or a sign-up is claiming it
-- right now (the claim migrates it).
CREATE FUNCTION public.migrate_pooled_schema(p_schema text, p_target bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_id      uuid;
    v_applied integer;
    v_version bigint;
BEGIN
    SELECT tenant_id INTO v_id FROM public.tenant_schema_pool
     WHERE schema_name = p_schema
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_applied := public.migrate_tenant_schema(p_schema, p_target);
    EXECUTE format('SELECT max(version) FROM %I.schema_migrations', p_schema) INTO v_version;
    UPDATE public.tenant_schema_pool SET schema_version = v_version WHERE tenant_id = v_id;
    RETURN v_applied;
END
$$;

-- create_tenant_schema adopts a pooled schema when the registered tenant's id is one the
-- pool holds (after reserve_pooled_schema); otherwise it is unchanged. A pooled row whose
-- schema was dropped by hand is discarded and the schema made afresh, so one broken row
-- cannot fail every sign-up.
CREATE OR REPLACE FUNCTION public.create_tenant_schema(p_tenant_id uuid) RETURNS varchar
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_schema text;
    v_pooled text;
BEGIN
    SELECT schema_name INTO v_schema FROM public.tenants WHERE id = p_tenant_id;
    IF NOT FOUND THEN
        v_schema := 'tenant_' || replace(p_tenant_id::text, '-', '');
    ELSE
        DELETE FROM public.tenant_schema_pool p WHERE p.tenant_id = p_tenant_id
        RETURNING p.schema_name INTO v_pooled;
        IF FOUND THEN
            IF v_pooled IS DISTINCT FROM v_schema THEN
                RAISE EXCEPTION 'tenant % is registered with schema "%", but its pooled schema is "%"',
                                p_tenant_id, v_schema, v_pooled
                    USING ERRCODE = 'invalid_schema_name',
                          HINT = 'register a pooled tenant id with schema_name ''tenant_'' || its 32 hex digits';
            END IF;
            IF to_regnamespace(quote_ident(v_schema)) IS NOT NULL THEN
                PERFORM public.migrate_tenant_schema(v_schema);
                RETURN v_schema;
            END IF;
        END IF;
    END IF;
    PERFORM public.assert_tenant_schema_name(v_schema);
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = v_schema) THEN
        RAISE EXCEPTION 'schema "%" already exists', v_schema
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'to finish a half-migrated schema run `capliquify tenant repair SLUG`';
    END IF;
    EXECUTE format('CREATE SCHEMA %I', v_schema);
    PERFORM public.migrate_tenant_schema(v_schema);
    PERFORM public.grant_tenant_role(p_tenant_id, v_schema);
    RETURN v_schema;
END
$$;

-- The guide's summary, with the pool's unclaimed schemas counted apart: "Tenant Schemas
-- Created" counts them too.
CREATE OR REPLACE FUNCTION public.tenancy_summary()
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
    UNION ALL
    SELECT 'Unclaimed Pooled Schemas',
           (SELECT count(*) FROM public.tenant_schema_pool),
           '(made ahead for sign-ups; CAPLIQUIFY_SCHEMA_POOL_SIZE)'
$$;

-- verify_tenant_isolation: check 3 (no orphan schemas) counts a pooled schema as owned.
-- The rest is 0002's function unchanged.
CREATE OR REPLACE FUNCTION public.verify_tenant_isolation()
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

    -- 3. No tenant_% schema without its registry row (or its schema-pool row).
    SELECT array_agg(n.nspname::text ORDER BY n.nspname) INTO v_bad FROM (
        SELECT nspname FROM pg_namespace n
         WHERE n.nspname LIKE 'tenant\_%'
           AND NOT EXISTS (SELECT 1 FROM public.tenants t WHERE t.schema_name = n.nspname)
           AND NOT EXISTS (SELECT 1 FROM public.tenant_schema_pool p WHERE p.schema_name = n.nspname)
         ORDER BY nspname LIMIT 20) n;
    test_name := 'no_orphan_schemas';
    result := CASE WHEN v_bad IS NULL THEN 'PASS' ELSE 'FAIL' END;
    details := CASE WHEN v_bad IS NULL THEN 'every tenant_% schema is registered or unclaimed in the schema pool'
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

REVOKE EXECUTE ON FUNCTION public.add_pooled_schema(integer), public.reserve_pooled_schema(),
    public.drop_pooled_schema(), public.migrate_pooled_schema(text, bigint) FROM PUBLIC;
-- The service fills the pool and claims from it; draining and migrating it are operators'
-- commands, run as the owner.
GRANT EXECUTE ON FUNCTION public.add_pooled_schema(integer), public.reserve_pooled_schema()
    TO capliquify_service;
GRANT SELECT ON public.tenant_schema_pool TO capliquify_service;

-- Fleet migrations in batches (issue 16: the new-column migration was 1.66× the bare
-- ALTERs, the difference being per-tenant work around them — a round trip, a commit, the
-- function's set-up). `capliquify migrate` hands a worker's next schemas over in one call:
-- each schema is migrated in its own subtransaction (a failure rolls back that schema
-- only and is returned as its error; the others go on), and all of them commit together.
-- The batch stops taking schemas once p_budget_ms have passed, so the tenants it has
-- migrated wait at most about that long for the commit that releases their tables' locks;
-- schemas it did not reach are not returned, and the caller hands them over again.
CREATE FUNCTION public.migrate_tenant_schemas(p_schemas text[], p_target bigint DEFAULT NULL,
                                              p_budget_ms integer DEFAULT 50)
RETURNS TABLE (schema_name text, applied integer, error text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_schema  text;
    v_message text;
    v_hint    text;
BEGIN
    FOREACH v_schema IN ARRAY p_schemas LOOP
        EXIT WHEN schema_name IS NOT NULL
              AND clock_timestamp() - v_started > make_interval(secs => p_budget_ms / 1000.0);
        schema_name := v_schema;
        applied := NULL;
        error := NULL;
        BEGIN
            applied := public.migrate_tenant_schema(v_schema, p_target);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
            error := v_message || CASE WHEN coalesce(v_hint, '') = '' THEN ''
                                       ELSE ' (' || v_hint || ')' END;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION public.migrate_tenant_schemas(text[], bigint, integer) FROM PUBLIC;
