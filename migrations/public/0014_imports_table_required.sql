-- Tenant migration 0005 adds the `imports` table (the history of data imports,
-- docs/import.md): an up-to-date tenant schema has it, so the isolation check requires it.
CREATE OR REPLACE FUNCTION public.tenant_required_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['api_credentials', 'companies', 'forecasts', 'imports', 'inventory', 'products',
                 'sales', 'scenarios', 'schema_migrations', 'user_preferences',
                 'working_capital_metrics']
$$;
