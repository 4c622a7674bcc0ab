-- The memory of the calling backend, for connection recycling (src/db/recycle.rs).
--
-- Every tenant schema a pooled connection touches leaves catalog and relation cache in its
-- backend (~40 KiB per tenant, never freed while the backend lives): a connection that has
-- served thousands of tenants holds hundreds of MiB. The service closes a pooled connection
-- whose backend has grown past a budget; this is how it asks.
--
-- pg_backend_memory_contexts is readable only by superusers and pg_read_all_stats. SECURITY
-- DEFINER lets the service read its own backend's total (the view only ever shows the
-- calling backend) without the right to read every session's statistics. Under an owner that
-- cannot read the view the call fails, and the service says so once and does not recycle
-- (docs/operations.md).

CREATE FUNCTION public.backend_memory_bytes() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$ SELECT sum(total_bytes)::bigint FROM pg_catalog.pg_backend_memory_contexts $$;

REVOKE EXECUTE ON FUNCTION public.backend_memory_bytes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.backend_memory_bytes() TO capliquify_service;
