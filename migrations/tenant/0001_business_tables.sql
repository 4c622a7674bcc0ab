-- The nine business tables of one tenant (shared/SCHEMA.md, "Tenant schema").
-- Applied inside the tenant's schema with search_path set to that schema only:
-- names are unqualified; the one thing used from outside is public.set_updated_at().
-- Never use "-- no-transaction": every tenant is migrated in one transaction.

CREATE TABLE companies (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              varchar(255) NOT NULL,
    legal_name        varchar(255),
    tax_id            varchar(50),
    currency          varchar(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    fiscal_year_end   varchar(5) CHECK (fiscal_year_end ~ '^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'),
    settings          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id        uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    sku               varchar(100) NOT NULL UNIQUE,
    name              varchar(255) NOT NULL,
    description       text,
    category          varchar(100),
    unit_cost         numeric(15,2) CHECK (unit_cost >= 0),
    unit_price        numeric(15,2) CHECK (unit_price >= 0),
    currency          varchar(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    reorder_point     integer CHECK (reorder_point >= 0),
    reorder_quantity  integer CHECK (reorder_quantity >= 0),
    lead_time_days    integer CHECK (lead_time_days >= 0),
    is_active         boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_products_company ON products (company_id);
CREATE INDEX idx_products_category ON products (category);
CREATE INDEX idx_products_active ON products (is_active);

CREATE TABLE sales (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id        uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    product_id        uuid REFERENCES products (id) ON DELETE SET NULL,
    sale_date         date NOT NULL,
    quantity          integer NOT NULL,
    unit_price        numeric(15,2) NOT NULL,
    total_amount      numeric(15,2) NOT NULL,
    currency          varchar(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    channel           varchar(50),
    external_id       varchar(255),
    customer_name     varchar(255),
    customer_id       varchar(255),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_sales_company_date ON sales (company_id, sale_date);
CREATE INDEX idx_sales_product ON sales (product_id);
CREATE INDEX idx_sales_date ON sales (sale_date);
CREATE INDEX idx_sales_channel ON sales (channel);

CREATE TABLE inventory (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    product_id          uuid NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    warehouse_location  varchar(100),
    quantity_on_hand    integer NOT NULL CHECK (quantity_on_hand >= 0),
    quantity_reserved   integer NOT NULL DEFAULT 0 CHECK (quantity_reserved >= 0),
    quantity_available  integer GENERATED ALWAYS AS (quantity_on_hand - quantity_reserved) STORED,
    unit_cost           numeric(15,2) CHECK (unit_cost >= 0),
    total_value         numeric(15,2) GENERATED ALWAYS AS (quantity_on_hand * unit_cost) STORED,
    last_counted_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_inventory_company ON inventory (company_id);
CREATE INDEX idx_inventory_product ON inventory (product_id);

CREATE TABLE forecasts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id           uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    product_id           uuid REFERENCES products (id) ON DELETE SET NULL,
    forecast_date        date NOT NULL,
    forecast_type        varchar(50) NOT NULL,
    model_type           varchar(50),
    predicted_value      numeric(15,2) NOT NULL,
    lower_bound          numeric(15,2),
    upper_bound          numeric(15,2),
    confidence_level     numeric(5,2) CHECK (confidence_level BETWEEN 0 AND 100),
    actual_value         numeric(15,2),
    accuracy_percentage  numeric(5,2),
    model_parameters     jsonb,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_forecasts_company_type_date ON forecasts (company_id, forecast_type, forecast_date);
CREATE INDEX idx_forecasts_product_date ON forecasts (product_id, forecast_date);

CREATE TABLE working_capital_metrics (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    period_date                 date NOT NULL,
    period_type                 varchar(20) NOT NULL,
    cash                        numeric(15,2),
    accounts_receivable         numeric(15,2),
    inventory                   numeric(15,2),
    accounts_payable            numeric(15,2),
    short_term_debt             numeric(15,2),
    working_capital             numeric(15,2),
    current_ratio               numeric(10,4),
    quick_ratio                 numeric(10,4),
    days_sales_outstanding      numeric(10,2),
    days_inventory_outstanding  numeric(10,2),
    days_payables_outstanding   numeric(10,2),
    cash_conversion_cycle       numeric(10,2),
    operating_cash_flow         numeric(15,2),
    cash_runway_days            integer,
    created_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_wcm_company_period ON working_capital_metrics (company_id, period_date);

CREATE TABLE scenarios (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name                varchar(255) NOT NULL,
    description         text,
    scenario_type       varchar(50),
    parameters          jsonb NOT NULL,
    results             jsonb,
    is_baseline         boolean NOT NULL DEFAULT false,
    created_by_user_id  varchar(255),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_scenarios_company ON scenarios (company_id);

CREATE TABLE api_credentials (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    service                 varchar(50) NOT NULL,
    service_display_name    varchar(255),
    -- Sealed envelope only (AES-256-GCM); plaintext never reaches this column.
    credentials             jsonb NOT NULL,
    oauth_access_token      text,
    oauth_refresh_token     text,
    oauth_token_expires_at  timestamptz,
    is_active               boolean NOT NULL DEFAULT true,
    last_sync_at            timestamptz,
    last_sync_status        varchar(50),
    last_sync_error         text,
    sync_frequency          varchar(20),
    auto_sync_enabled       boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, service)
);

CREATE TABLE user_preferences (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      varchar(255) NOT NULL UNIQUE,
    preferences  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER companies_updated_at BEFORE UPDATE ON companies
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER products_updated_at BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER sales_updated_at BEFORE UPDATE ON sales
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER inventory_updated_at BEFORE UPDATE ON inventory
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER scenarios_updated_at BEFORE UPDATE ON scenarios
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER api_credentials_updated_at BEFORE UPDATE ON api_credentials
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER user_preferences_updated_at BEFORE UPDATE ON user_preferences
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
