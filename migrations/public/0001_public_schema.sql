-- Shared metadata: the tenant registry, users, subscriptions and the audit trail.
-- Column names and meanings follow shared/SCHEMA.md (the guide's 001_create_public_schema.sql);
-- additions are marked "capliquify:".

CREATE TYPE public.subscription_tier AS ENUM ('starter', 'professional', 'enterprise');
CREATE TYPE public.subscription_status AS ENUM ('trial', 'active', 'past_due', 'cancelled', 'suspended');
CREATE TYPE public.user_role AS ENUM ('owner', 'admin', 'member', 'viewer');
CREATE TYPE public.billing_cycle AS ENUM ('monthly', 'annual');

-- The one updated_at trigger function, shared by public and tenant tables.
CREATE FUNCTION public.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE public.tenants (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                    varchar(50)  NOT NULL UNIQUE
                            CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$'),
    name                    varchar(255) NOT NULL CHECK (btrim(name) <> ''),
    schema_name             varchar(63)  NOT NULL UNIQUE
                            CHECK (schema_name ~ '^tenant_[a-z0-9_]{1,56}$'),
    clerk_organization_id   varchar(255) NOT NULL UNIQUE,
    subscription_tier       public.subscription_tier   NOT NULL,
    subscription_status     public.subscription_status NOT NULL,
    trial_ends_at           timestamptz,
    subscription_starts_at  timestamptz,
    subscription_ends_at    timestamptz,
    max_users               integer CHECK (max_users >= 0),
    max_entities            integer CHECK (max_entities >= 0),
    features                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    -- capliquify: the status to return to on reactivation (set while status is 'suspended').
    status_before_suspension public.subscription_status,
    -- capliquify: mirror of the newest version in the tenant schema's own schema_migrations
    -- table, written in the same transaction; NULL while the schema does not exist. It lets
    -- `capliquify migrate` find the tenants with work to do in one query.
    schema_version          bigint
);

CREATE INDEX idx_tenants_clerk_org ON public.tenants (clerk_organization_id);
CREATE INDEX idx_tenants_slug ON public.tenants (slug);
CREATE INDEX idx_tenants_status ON public.tenants (subscription_status);
CREATE INDEX idx_tenants_schema_version ON public.tenants (schema_version);
CREATE INDEX idx_tenants_deleted_at ON public.tenants (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE public.users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_user_id  varchar(255) NOT NULL UNIQUE,
    email          varchar(255) NOT NULL,
    full_name      varchar(255),
    tenant_id      uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
    role           public.user_role NOT NULL,
    last_login_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_users_clerk_user ON public.users (clerk_user_id);
CREATE INDEX idx_users_tenant ON public.users (tenant_id);
CREATE INDEX idx_users_email ON public.users (email);

CREATE TABLE public.subscriptions (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id               uuid NOT NULL UNIQUE REFERENCES public.tenants (id) ON DELETE CASCADE,
    stripe_customer_id      varchar(255) UNIQUE,
    stripe_subscription_id  varchar(255) UNIQUE,
    stripe_price_id         varchar(255),
    billing_cycle           public.billing_cycle NOT NULL,
    amount_cents            integer NOT NULL CHECK (amount_cents >= 0),
    currency                varchar(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    status                  public.subscription_status NOT NULL,
    current_period_start    timestamptz,
    current_period_end      timestamptz,
    cancel_at_period_end    boolean NOT NULL DEFAULT false,
    cancelled_at            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_subscriptions_tenant ON public.subscriptions (tenant_id);
CREATE INDEX idx_subscriptions_stripe_customer ON public.subscriptions (stripe_customer_id);

CREATE TABLE public.audit_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid REFERENCES public.tenants (id) ON DELETE CASCADE,
    user_id        uuid REFERENCES public.users (id) ON DELETE SET NULL,
    action         varchar(100) NOT NULL,
    resource_type  varchar(50),
    resource_id    varchar(255),
    ip_address     inet,
    user_agent     text,
    metadata       jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_logs_tenant ON public.audit_logs (tenant_id);
CREATE INDEX idx_audit_logs_action ON public.audit_logs (action);
CREATE INDEX idx_audit_logs_created_at ON public.audit_logs (created_at);

CREATE TRIGGER tenants_updated_at BEFORE UPDATE ON public.tenants
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER users_updated_at BEFORE UPDATE ON public.users
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER subscriptions_updated_at BEFORE UPDATE ON public.subscriptions
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
