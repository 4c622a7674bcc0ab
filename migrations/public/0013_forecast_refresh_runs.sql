-- `capliquify forecasts refresh` (src/cli/forecasts.rs, src/tenancy/refresh_runs.rs): the
-- fleet job's runs and the product batches each run has refreshed, so that running the
-- command again after a crash or a failure resumes the run instead of starting over
-- (docs/domain.md, "The refresh job"). Written by the operator's command only: nothing is
-- granted to the service's role or to tenants' roles.

CREATE TABLE public.forecast_refresh_runs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- What the run regenerates (forecast_type, granularity, horizon, model,
    -- confidence_level) and the tenant it is limited to (null: every eligible tenant).
    -- Only an invocation asking for the same resumes it.
    options      jsonb NOT NULL,
    -- The history ends before the period holding this date (the first forecast period).
    -- A resumed run keeps it; a run whose period is over is not resumed.
    as_of        date NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once every eligible tenant's products were refreshed without a failure.
    finished_at  timestamptz
);
CREATE INDEX forecast_refresh_runs_open ON public.forecast_refresh_runs (started_at DESC)
    WHERE finished_at IS NULL;

-- One row per committed batch: the tenant's active products from first_product to
-- last_product (in id order, both included) were refreshed by the run. Recorded after the
-- batch's tenant transaction commits: a crash between the two redoes that one batch, which
-- is harmless (a refresh replaces the products' previous forecasts).
CREATE TABLE public.forecast_refresh_batches (
    run_id         uuid NOT NULL REFERENCES public.forecast_refresh_runs (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
    first_product  uuid NOT NULL,
    last_product   uuid NOT NULL,
    products       integer NOT NULL CHECK (products > 0),
    refreshed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tenant_id, first_product),
    CHECK (first_product <= last_product)
);

REVOKE ALL ON public.forecast_refresh_runs, public.forecast_refresh_batches FROM PUBLIC;
