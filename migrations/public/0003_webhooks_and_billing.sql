-- Webhooks from Clerk and Stripe: idempotency, ordering, and the billing state they drive.

-- One row per provider event. A replay finds its row and changes nothing; a failed event
-- is retried by the provider and processed again.
CREATE TABLE public.webhook_events (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider          varchar(20)  NOT NULL CHECK (provider IN ('clerk', 'stripe')),
    event_id          varchar(255) NOT NULL,
    event_type        varchar(100) NOT NULL,
    -- What the event is about (organization, membership, subscription or customer id), so
    -- that a late event can be compared with the ones already applied to the same thing.
    subject           varchar(255),
    -- The provider's own time for the event (Stripe `created`, Clerk `timestamp`).
    event_created_at  timestamptz,
    received_at       timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    -- applied: changed state; ignored: unknown or irrelevant type; stale: older than the
    -- state it would change; failed: processing failed (the provider retries).
    outcome           varchar(20)  NOT NULL CHECK (outcome IN ('applied', 'ignored', 'stale', 'failed')),
    error             text,
    UNIQUE (provider, event_id)
);
CREATE INDEX idx_webhook_events_received ON public.webhook_events (received_at);
CREATE INDEX idx_webhook_events_subject ON public.webhook_events (provider, subject, event_type);

-- The Stripe customer a tenant pays with (set by checkout.session.completed).
ALTER TABLE public.tenants ADD COLUMN stripe_customer_id varchar(255) UNIQUE;
-- Clerk's updated_at of the organization state we hold: older events are stale.
ALTER TABLE public.tenants ADD COLUMN clerk_updated_at timestamptz;
-- The Clerk user who created the organization: their membership maps to owner.
ALTER TABLE public.tenants ADD COLUMN clerk_created_by varchar(255);
-- When the tenant went past due (for the grace period of the lifecycle job).
ALTER TABLE public.tenants ADD COLUMN past_due_since timestamptz;
-- Stripe `created` of the newest event that set the tenant's billing status (subscription
-- and invoice events).
ALTER TABLE public.tenants ADD COLUMN stripe_event_at timestamptz;
-- Stripe `created` of the newest subscription event applied (plan, price, period).
ALTER TABLE public.subscriptions ADD COLUMN stripe_event_at timestamptz;

-- A membership beyond the plan's max_users is kept but refused until the plan grows.
ALTER TABLE public.users ADD COLUMN over_plan_limit boolean NOT NULL DEFAULT false;
-- Clerk's updated_at of the membership we hold, and the membership's removal (a tombstone,
-- so that a late, older event cannot bring a removed member back).
ALTER TABLE public.users ADD COLUMN clerk_updated_at timestamptz;
ALTER TABLE public.users ADD COLUMN removed_at timestamptz;
ALTER TABLE public.users ADD COLUMN clerk_membership_id varchar(255);
