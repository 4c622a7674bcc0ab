-- Billing is bound to the tenant's id, not its slug (docs/webhooks.md): an event whose
-- metadata names another tenant than the customer's link, or a checkout that would relink a
-- tenant to another customer, is answered 200 and recorded as `refused` (Stripe stops
-- retrying; the refusal is in the audit trail).
ALTER TABLE public.webhook_events DROP CONSTRAINT webhook_events_outcome_check;
ALTER TABLE public.webhook_events ADD CONSTRAINT webhook_events_outcome_check
    CHECK (outcome IN ('applied', 'ignored', 'stale', 'failed', 'refused'));
