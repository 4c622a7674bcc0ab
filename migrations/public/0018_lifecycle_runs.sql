-- The lifecycle job's runs (src/tenancy/lifecycle_job.rs): when each run that took the
-- job's lock started and ended, whether it finished, and what it changed — so operators
-- (the console's System page) can see that the job runs and what its last run did.
-- Written by the job in `serve` (as the service's role) and by `capliquify lifecycle run`.
-- Runs another instance skipped (it held the lock) are not recorded. Rows older than 90
-- days are deleted by the job as it records a new one.

CREATE TABLE public.lifecycle_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    -- `done`: the run went through (some tenants' changes may have failed: see report);
    -- `failed`: the run stopped at an error (see error).
    outcome      text NOT NULL CHECK (outcome IN ('done', 'failed')),
    -- The job's report (JobReport as JSON): the slugs suspended, ended, purged, failed.
    report       jsonb,
    error        text,
    CHECK (started_at <= finished_at),
    CHECK ((outcome = 'done') = (report IS NOT NULL)),
    CHECK ((outcome = 'failed') = (error IS NOT NULL))
);
CREATE INDEX lifecycle_runs_finished ON public.lifecycle_runs (finished_at DESC);

REVOKE ALL ON public.lifecycle_runs FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON public.lifecycle_runs TO capliquify_service;
