-- Least-privilege database roles (docs/security.md, "Database roles").
--
-- capliquify_service  NOLOGIN NOINHERIT  what the HTTP service may do in `public`; member of
--                                         every tenant role, so it can SET ROLE to one, but
--                                         NOINHERIT: it holds none of their rights itself.
-- capliquify_tenant   NOLOGIN            the group of all tenant roles: INSERT on audit_logs,
--                                         limited by a row-level policy to the tenant's rows.
-- capliquify_t_<id>   NOLOGIN            one per tenant (id = tenant uuid without dashes):
--                                         DML on its own schema's tables, nothing else.
-- The login role the service connects as (default capliquify_app) is created by
-- `capliquify db init-roles`: a plain member of capliquify_service.
--
-- Roles belong to the cluster, grants to the database: the roles are created here once per
-- cluster (whoever runs `capliquify migrate` needs CREATEROLE), the grants once per database.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user
                      AND (rolsuper OR rolcreaterole)) THEN
        RAISE EXCEPTION 'the role running migrations (%) needs CREATEROLE', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'run `capliquify migrate` as the database owner with CREATEROLE (ALTER ROLE ... CREATEROLE)';
    END IF;
    -- Another database of the same cluster may be creating them at this moment.
    BEGIN
        CREATE ROLE capliquify_service NOLOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE capliquify_tenant NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

-- The tenant's role name, derived from its id: unique across every database of the cluster.
CREATE FUNCTION public.tenant_role_name(p_tenant_id uuid) RETURNS name
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('capliquify_t_' || replace(p_tenant_id::text, '-', ''))::name
$$;

-- Creates the tenant's role if needed, lets capliquify_service (and the owner running the
-- operators' commands, when it is not a superuser) switch to it, and grants it DML on every
-- table of p_schema (and nothing on the schema's migration history). Idempotent; run after
-- every change to the schema's tables. SECURITY DEFINER: the service provisions tenants
-- without holding CREATEROLE itself.
CREATE FUNCTION public.grant_tenant_role(p_tenant_id uuid, p_schema text) RETURNS name
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_role name := public.tenant_role_name(p_tenant_id);
BEGIN
    PERFORM public.assert_tenant_schema_name(p_schema);
    -- Serialised with migrations and repairs of the same schema (role membership rows).
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || p_schema, 0));
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN INHERIT IN ROLE capliquify_tenant', v_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_auth_members m
                    WHERE m.roleid = to_regrole(quote_ident(v_role))
                      AND m.member = to_regrole('capliquify_service')) THEN
        EXECUTE format('GRANT %I TO capliquify_service', v_role);
    END IF;
    -- SET ROLE is checked against the session user: operators' commands that work in a
    -- tenant's transaction (keys rotate, fleet sql) run as this function's owner.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, v_role, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', v_role, current_user);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', p_schema, v_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                   p_schema, v_role);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I',
                   p_schema, v_role);
    -- Tables and sequences later migrations create: migrate_tenant_schema runs as this
    -- function's owner too (SECURITY DEFINER), so its new objects get these at creation.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I
                    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
                   current_user, p_schema, v_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I
                    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %I',
                   current_user, p_schema, v_role);
    IF to_regclass(quote_ident(p_schema) || '.schema_migrations') IS NOT NULL THEN
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON %I.schema_migrations FROM %I',
                       p_schema, v_role);
    END IF;
    RETURN v_role;
END
$$;

-- Drops the tenant's role (after its schema is gone). A role that still holds rights
-- elsewhere is kept, with a warning, rather than failing a purge.
CREATE FUNCTION public.drop_tenant_role(p_tenant_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_role name := public.tenant_role_name(p_tenant_id);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('DROP ROLE %I', v_role);
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE WARNING 'role % still holds rights elsewhere; kept', v_role;
        RETURN false;
    END;
    RETURN true;
END
$$;

-- create_tenant_schema now also creates and grants the tenant's role, and runs with its
-- owner's rights so the service can provision without DDL rights of its own.
CREATE OR REPLACE FUNCTION public.create_tenant_schema(p_tenant_id uuid) RETURNS varchar
LANGUAGE plpgsql SECURITY DEFINER
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
    PERFORM public.grant_tenant_role(p_tenant_id, v_schema);
    RETURN v_schema;
END
$$;

-- delete_tenant_schema also drops the tenant's role.
CREATE OR REPLACE FUNCTION public.delete_tenant_schema(p_tenant_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
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
        PERFORM public.drop_tenant_role(p_tenant_id);
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:tenant-schema:' || v_schema, 0));
    EXECUTE format('DROP SCHEMA %I CASCADE', v_schema);
    PERFORM public.drop_tenant_role(p_tenant_id);
    UPDATE public.tenants SET schema_version = NULL WHERE id = p_tenant_id;
    RETURN true;
END
$$;

-- migrate_tenant_schema runs as its owner (SECURITY DEFINER), the role whose default
-- privileges in each tenant schema (set by grant_tenant_role) grant the tenant's role every
-- table and sequence a migration creates, whoever runs `capliquify migrate`.
CREATE OR REPLACE FUNCTION public.migrate_tenant_schema(p_schema text, p_target bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
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

-- Existing tenants get their roles.
SELECT public.grant_tenant_role(t.id, t.schema_name)
  FROM public.tenants t
  JOIN pg_namespace n ON n.nspname = t.schema_name;

-- What the service may do in public. No UPDATE, DELETE or TRUNCATE on audit_logs.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenants, public.users, public.subscriptions,
                                        public.webhook_events TO capliquify_service;
GRANT SELECT, INSERT ON public.audit_logs TO capliquify_service;
GRANT SELECT ON public.tenant_migrations, public._sqlx_migrations TO capliquify_service;
-- (_sqlx_migrations: the service checks at start and in /readyz that the schema is current.)

-- Functions that change schemas or roles, or list them, are for the service only.
REVOKE EXECUTE ON FUNCTION public.create_tenant_schema(uuid), public.delete_tenant_schema(uuid),
    public.migrate_tenant_schema(text, bigint), public.grant_tenant_role(uuid, text),
    public.drop_tenant_role(uuid), public.list_tenant_schemas(), public.tenancy_summary(),
    public.verify_tenant_isolation() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.create_tenant_schema(uuid), public.delete_tenant_schema(uuid),
    public.list_tenant_schemas(), public.tenancy_summary(),
    public.verify_tenant_isolation() TO capliquify_service;

-- Tenant roles may append audit rows (their act's row, in the act's transaction), only for
-- their own tenant, and read none. Row-level security is used here, on the one shared table
-- tenant roles can write; tenant schemas need none (docs/security.md explains why).
GRANT INSERT ON public.audit_logs TO capliquify_tenant;
ALTER TABLE public.audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_logs_service ON public.audit_logs TO capliquify_service
    USING (true) WITH CHECK (true);
CREATE POLICY audit_logs_tenant_append ON public.audit_logs FOR INSERT TO capliquify_tenant
    WITH CHECK (tenant_id IS NOT NULL AND public.tenant_role_name(tenant_id) = current_user);

-- Inside a tenant transaction a function call must not switch roles or settings
-- (`SELECT set_config('role', ...)` is SET ROLE in an expression). Only a superuser can
-- change the rights on pg_catalog's functions; other installs keep the default (documented).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper) THEN
        REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO capliquify_service;
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
END
$$;
