-- Citus mode (issue 17, docs/scaling.md "Citus mode"): the SQL that places tenant schemas on
-- Citus workers and keeps our guarantees there. Every function here does nothing more than
-- before on a server without Citus (no citus extension in this database), so plain mode is
-- unchanged; the Citus catalogs are only named inside branches that run with Citus present.

-- The plan limit's lock (companies). `LOCK TABLE` on a distributed table is sent to every
-- worker, not only the one holding the tenant: a connection to each worker per create.
-- A transaction-level advisory lock on the coordinator serialises the same creates and
-- stays there; without Citus the table lock is kept as well (it also serialises with
-- imports, which lock the table). SECURITY INVOKER: the caller (a tenant's role) locks its
-- own table only.
CREATE FUNCTION public.lock_for_plan_limit(p_table regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    v_distributed boolean := false;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('capliquify:plan-limit:' || p_table::oid::text, 0));
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
           INTO v_distributed USING p_table;
    END IF;
    IF NOT v_distributed THEN
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', p_table);
    END IF;
END
$$;

-- Places a tenant's schema on a worker: `citus_schema_distribute`, so every table of the
-- schema becomes a single-shard table colocated with the others on one worker.
--
-- Citus distributes a table created in a distributed schema only when CREATE TABLE runs
-- top-level: tables created inside create_tenant_schema or migrate_tenant_schema (SECURITY
-- DEFINER, through EXECUTE) stay on the coordinator, even with
-- citus.enable_schema_based_sharding on (the schema is then registered as distributed while
-- its tables are not). So this function runs after both, and brings every table of the
-- schema onto the schema's worker: a schema not yet distributed is distributed whole; in a
-- distributed schema, each table left on the coordinator is distributed colocated with the
-- schema's others (in creation order, so a migration's new table follows the tables its
-- foreign keys name); a schema registered with no distributed table at all is
-- undistributed and distributed again. ALTER TABLE and CREATE INDEX need nothing: Citus
-- propagates them from inside functions too.
--
-- The updated_at triggers only change the row being written (no other table, no other
-- node), so they are safe on a shard: citus.enable_unsafe_triggers is turned on for this
-- transaction only, to let Citus distribute tables that have them.
--
-- Returns false (and does nothing) without Citus. SECURITY DEFINER: the service provisions
-- without the rights Citus's functions need.
CREATE FUNCTION public.citus_distribute_tenant_schema(p_schema text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_ns     regnamespace;
    v_anchor regclass;
    v_table  regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    PERFORM public.assert_tenant_schema_name(p_schema);
    v_ns := to_regnamespace(quote_ident(p_schema));
    IF v_ns IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist', p_schema USING ERRCODE = 'invalid_schema_name';
    END IF;
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    IF NOT EXISTS (SELECT 1 FROM pg_dist_schema WHERE schemaid = v_ns) THEN
        PERFORM citus_schema_distribute(v_ns);
        RETURN true;
    END IF;
    SELECT p.logicalrelid INTO v_anchor
      FROM pg_depend d JOIN pg_dist_partition p ON p.logicalrelid = d.objid
     WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = v_ns
       AND d.classid = 'pg_class'::regclass AND d.deptype = 'n'
     ORDER BY p.logicalrelid LIMIT 1;
    IF v_anchor IS NULL THEN
        PERFORM citus_schema_undistribute(v_ns);
        PERFORM citus_schema_distribute(v_ns);
        RETURN true;
    END IF;
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
         WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = v_ns
           AND d.classid = 'pg_class'::regclass AND d.deptype = 'n'
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)
         ORDER BY c.oid
    LOOP
        PERFORM create_distributed_table(v_table, NULL, colocate_with => v_anchor::text);
    END LOOP;
    RETURN true;
END
$$;

-- The tenant's role on the workers. Citus opens its connections to a worker as the current
-- role, so after `SET LOCAL ROLE` the tenant's role must be able to log in there (a NOLOGIN
-- role fails: "not permitted to log in"). The role gets LOGIN and the password whose
-- SCRAM-SHA-256 verifier is p_verifier (Citus propagates both to every worker, in this
-- transaction), then NOLOGIN again on this node only (the coordinator: nobody logs in as a
-- tenant here, as without Citus), and the password goes to pg_dist_authinfo (readable by
-- superusers only), which Citus uses for that role's connections to every worker. Workers'
-- pg_hba.conf admits tenant roles from the coordinator's address only (docs/scaling.md).
-- The password is made by the caller for this role alone, and is never shown. False (and
-- nothing done) without Citus or without the role.
CREATE FUNCTION public.citus_tenant_worker_login(p_tenant_id uuid, p_verifier text, p_password text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_role      name := public.tenant_role_name(p_tenant_id);
    v_propagate text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        RETURN false;
    END IF;
    IF p_verifier !~ '^SCRAM-SHA-256\$' OR p_password !~ '^[0-9a-f]{32,}$' THEN
        RAISE EXCEPTION 'a tenant role''s worker login needs a SCRAM-SHA-256 verifier and a hex password'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', v_role, p_verifier);
    v_propagate := current_setting('citus.enable_alter_role_propagation');
    PERFORM set_config('citus.enable_alter_role_propagation', 'off', true);
    EXECUTE format('ALTER ROLE %I NOLOGIN', v_role);
    PERFORM set_config('citus.enable_alter_role_propagation', v_propagate, true);
    INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo)
    VALUES (0, v_role, 'password=' || p_password)
    ON CONFLICT (rolename, nodeid) DO UPDATE SET authinfo = EXCLUDED.authinfo;
    RETURN true;
END
$$;

-- The audit trail in Citus mode: an act's business write runs on a worker and its audit row
-- on the coordinator. Citus commits a worker's single-node write in its own COMMIT before
-- the coordinator's (no two-phase commit for that pair), so a crash between the two would
-- leave an act without its row. Citus does use two-phase commit as soon as the transaction
-- also writes a table Citus manages on the coordinator: public.audit_logs is added to
-- Citus's metadata as a "citus local table" (it stays on the coordinator; the tables its
-- foreign keys reach come with it), so the worker PREPAREs, the coordinator's commit records
-- the decision in pg_dist_transaction and Citus's recovery finishes (or rolls back) the
-- prepared worker transaction whatever crashes. Idempotent; false without Citus. Run by
-- `capliquify migrate` in Citus mode (as the migrating role: it needs the tables' owner).
CREATE FUNCTION public.citus_prepare_public() RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'public.audit_logs'::regclass) THEN
        PERFORM citus_add_local_table_to_metadata('public.audit_logs', cascade_via_foreign_keys => true);
    END IF;
    RETURN true;
END
$$;

-- A purged tenant's role leaves no worker password behind (otherwise as migration 0006).
CREATE OR REPLACE FUNCTION public.drop_tenant_role(p_tenant_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_role name := public.tenant_role_name(p_tenant_id);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        RETURN false;
    END IF;
    IF to_regclass('pg_catalog.pg_dist_authinfo') IS NOT NULL THEN
        EXECUTE 'DELETE FROM pg_catalog.pg_dist_authinfo WHERE rolename = $1' USING v_role;
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

-- Only the service provisions (as for create_tenant_schema, migration 0006).
REVOKE EXECUTE ON FUNCTION public.citus_distribute_tenant_schema(text),
    public.citus_tenant_worker_login(uuid, text, text), public.citus_prepare_public() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.citus_distribute_tenant_schema(text),
    public.citus_tenant_worker_login(uuid, text, text) TO capliquify_service;
