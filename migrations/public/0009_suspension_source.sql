-- Who switched a tenant off, so that billing can lift the suspensions that were about
-- payment and leave an operator's standing (docs/webhooks.md, "Suspensions").
--   operator  - `capliquify tenant suspend` or the admin API: only an operator lifts it;
--   lifecycle - the lifecycle job (trial over, payment past due): a payment lifts it;
--   billing   - Stripe paused the subscription: the subscription's next status lifts it.
-- NULL while the tenant is not suspended. A suspended row with NULL (written by hand, or
-- restored from an archive made before this column) is treated as an operator's.
CREATE TYPE public.suspension_source AS ENUM ('operator', 'lifecycle', 'billing');

ALTER TABLE public.tenants
    ADD COLUMN suspended_by public.suspension_source,
    ADD CONSTRAINT tenants_suspended_by_check
        CHECK (suspended_by IS NULL OR subscription_status = 'suspended');

-- Suspensions in place: the newest suspend/reactivate audit row tells who did it. A tenant
-- suspended with no such row was switched off by a `paused` Stripe subscription (billing
-- wrote the status directly, auditing `subscription.updated`).
UPDATE public.tenants t
   SET suspended_by = CASE
           WHEN last.action IS NULL OR last.action <> 'tenant.suspended' THEN 'billing'
           WHEN last.metadata->'actor'->>'kind' = 'system' THEN 'lifecycle'
           ELSE 'operator'
       END::public.suspension_source
  FROM public.tenants t2
  LEFT JOIN LATERAL (
        SELECT a.action, a.metadata
          FROM public.audit_logs a
         WHERE a.tenant_id = t2.id AND a.action IN ('tenant.suspended', 'tenant.reactivated')
         ORDER BY a.created_at DESC
         LIMIT 1) last ON true
 WHERE t.id = t2.id AND t.subscription_status = 'suspended';
