-- migrate_tenant_schema, with less work per tenant (a fleet migration calls it once per
-- tenant, so its fixed cost is multiplied by the fleet):
-- - for a registered tenant, the current version comes from the registry row it updates
--   anyway (tenants.schema_version, written in the same transaction as the schema's own
--   history), instead of a query on the schema's schema_migrations table;
-- - the drift check on the schema's applied history runs when the registry cannot vouch
--   for it (unregistered schemas, a missing mirror); `capliquify doctor` checks it for all;
-- - schema_migrations is created only when it is missing (CREATE TABLE IF NOT EXISTS is
--   DDL and sends a notice every time);
-- - the name check is inline rather than a function call;
-- - everything that is not dynamic SQL runs before the search_path switches to the tenant:
--   a statement planned under one search_path is re-planned under another, so statements
--   after the switch lost their cached plans on every call.

CREATE OR REPLACE FUNCTION public.migrate_tenant_schema(p_schema text, p_target bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    versions      bigint[];
    descriptions  text[];
    sqls          text[];
    checksums     bytea[];
    current       bigint;
    drifted     bigint;
    registered  boolean;
BEGIN
    IF p_schema IS NULL OR p_schema !~ '^tenant_[a-z0-9_]{1,56}$' THEN
        PERFORM public.assert_tenant_schema_name(p_schema);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || p_schema, 0));

    IF to_regnamespace(quote_ident(p_schema)) IS NULL THEN
        RAISE EXCEPTION 'tenant schema "%" does not exist', p_schema
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'create it with create_tenant_schema(tenant id) or `capliquify tenant repair`';
    END IF;

    SELECT true, t.schema_version INTO registered, current
      FROM public.tenants t WHERE t.schema_name = p_schema;

    IF to_regclass(quote_ident(p_schema) || '.schema_migrations') IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM public.tenant_migrations) THEN
            RAISE EXCEPTION 'the tenant migration catalog is empty'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'run `capliquify migrate` once to load it';
        END IF;
        -- The schema's own record of what it has applied (DESIGN.md §4).
        EXECUTE format(
            'CREATE TABLE %I.schema_migrations (
                 version     bigint PRIMARY KEY,
                 description text NOT NULL,
                 checksum    bytea NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now())', p_schema);
        current := 0;
    ELSIF registered IS NULL OR current IS NULL THEN
        EXECUTE format(
            'SELECT coalesce(max(s.version), 0),
                    min(s.version) FILTER (WHERE c.checksum IS DISTINCT FROM s.checksum)
               FROM %I.schema_migrations s
               LEFT JOIN public.tenant_migrations c USING (version)', p_schema)
            INTO current, drifted;
        IF drifted IS NOT NULL THEN
            RAISE EXCEPTION 'tenant schema "%" applied migration % with a checksum the catalog does not have', p_schema, drifted
                USING ERRCODE = 'data_exception',
                      HINT = 'an applied migration was edited or removed; restore the original file';
        END IF;
    END IF;

    SELECT coalesce(array_agg(c.version ORDER BY c.version), '{}'),
           coalesce(array_agg(c.description ORDER BY c.version), '{}'),
           coalesce(array_agg(c.sql ORDER BY c.version), '{}'),
           coalesce(array_agg(c.checksum ORDER BY c.version), '{}')
      INTO versions, descriptions, sqls, checksums
      FROM public.tenant_migrations c
     WHERE c.version > current AND (p_target IS NULL OR c.version <= p_target);
    IF cardinality(versions) = 0 THEN
        IF registered THEN
            UPDATE public.tenants SET schema_version = current
             WHERE schema_name = p_schema AND schema_version IS DISTINCT FROM current;
        END IF;
        RETURN 0;
    END IF;
    IF registered THEN
        UPDATE public.tenants SET schema_version = versions[cardinality(versions)]
         WHERE schema_name = p_schema;
    END IF;

    -- Transaction-scoped and undone when this function returns (it has its own SET clause).
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    FOR i IN 1 .. cardinality(versions) LOOP
        EXECUTE sqls[i];
        EXECUTE format('INSERT INTO %I.schema_migrations (version, description, checksum)
                        VALUES ($1, $2, $3)', p_schema)
            USING versions[i], descriptions[i], checksums[i];
    END LOOP;
    RETURN cardinality(versions);
END
$$;

-- `schema_version IS DISTINCT FROM $1` (the pending-tenants query) cannot use a btree, so
-- this index only cost every version bump an insert into each of the registry's indexes;
-- without it the bump is a HOT update (helped by leaving room on each page).
DROP INDEX public.idx_tenants_schema_version;
ALTER TABLE public.tenants SET (fillfactor = 80);
