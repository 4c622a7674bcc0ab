-- Role membership checks that do not grow with the fleet (issue 16; docs/scaling.md
-- "Tenant roles and PostgreSQL's membership cache").
--
-- pg_has_role(a, b, 'MEMBER') makes PostgreSQL list every role `a` belongs to, directly or
-- through other roles, and keep that list in the backend until any role or membership in
-- the cluster changes. The migrations' owner and capliquify_service belong to every tenant
-- role, so for them the list is the whole fleet, and PostgreSQL 15 builds it in time
-- quadratic in its length (measured on this project's 2-core machine: 14 ms at 2,000
-- tenant roles, 115 ms at 5,000, 330–460 ms at 10,000; PostgreSQL 17, which builds it
-- differently: 60 ms in a new backend at 10,000, 1 ms after a change). grant_tenant_role
-- asked it once per tenant made, right after its own CREATE ROLE and GRANT had emptied the
-- list, so an owner without superuser (every managed database) paid it on every
-- provisioning.
--
-- role_is_member walks the other way, from `p_role` down to its members: a tenant role has
-- two or three, so the answer costs the same at any fleet size. A superuser is a member
-- only when granted (pg_has_role says yes to a superuser for every role); callers that
-- want that rule check rolsuper themselves, as grant_tenant_role does.
CREATE FUNCTION public.role_is_member(p_member name, p_role name) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    WITH RECURSIVE members(oid) AS (
        SELECT r.oid FROM pg_roles r WHERE r.rolname = p_role
        UNION
        SELECT m.member FROM pg_auth_members m JOIN members ON m.roleid = members.oid
    )
    SELECT EXISTS (SELECT 1 FROM members JOIN pg_roles r ON r.oid = members.oid
                    WHERE r.rolname = p_member)
$$;

-- As in 0012, with the owner's membership found by role_is_member.
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
       AND NOT public.role_is_member(current_user, v_role) THEN
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
