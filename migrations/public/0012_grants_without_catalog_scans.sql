-- Tenant grants without a scan of pg_class (issue 16, docs/scaling.md "Catalog scans").
--
-- `GRANT … ON ALL TABLES IN SCHEMA s` finds the schema's relations by scanning pg_class
-- (it has no index on relnamespace), so every provisioning and repair read a catalog that
-- grows by ~40 rows with every tenant: at a few thousand tenants the scans dominated
-- provisioning. grant_tenant_role now lists the schema's tables and sequences from the
-- namespace's dependency entries (pg_depend is indexed by the referenced object) and names
-- them in one GRANT each. Same rights as before: DML on every table (and view) of the schema,
-- USAGE/SELECT/UPDATE on every sequence, default privileges for later migrations' objects,
-- nothing but SELECT on schema_migrations.
CREATE OR REPLACE FUNCTION public.grant_tenant_role(p_tenant_id uuid, p_schema text) RETURNS name
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_role      name := public.tenant_role_name(p_tenant_id);
    v_tables    text;
    v_sequences text;
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
    SELECT string_agg(format('%I.%I', p_schema, c.relname), ', ' ORDER BY c.relname)
               FILTER (WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')),
           string_agg(format('%I.%I', p_schema, c.relname), ', ' ORDER BY c.relname)
               FILTER (WHERE c.relkind = 'S')
      INTO v_tables, v_sequences
      FROM pg_depend d
      JOIN pg_class c ON c.oid = d.objid
     WHERE d.refclassid = 'pg_namespace'::regclass
       AND d.refobjid = to_regnamespace(quote_ident(p_schema))
       AND d.classid = 'pg_class'::regclass
       AND d.deptype = 'n';
    IF v_tables IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO %I', v_tables, v_role);
    END IF;
    IF v_sequences IS NOT NULL THEN
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE %s TO %I', v_sequences, v_role);
    END IF;
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
