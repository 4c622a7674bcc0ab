//! Demo tenants for the embedded default: ACME Manufacturing (professional) and Beta
//! Industries (starter), with sample data shaped like the guide's testing script.

use chrono::Datelike;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;

use std::net::SocketAddr;
use std::time::Duration;

use crate::access::Role;
use crate::audit::Actor;
use crate::billing::Tier;
use crate::db::scope;
use crate::domain::working_capital as wc;
use crate::http::auth::Authenticator;
use crate::tenancy::{NewTenant, Tenancy, TenancyError, Tenant, registry};

struct DemoTenant {
    slug: &'static str,
    name: &'static str,
    tier: Tier,
    clerk_org: &'static str,
    /// Suffix of the shell variable the token is printed into.
    env_name: &'static str,
    products: &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    )],
}

const DEMO: &[DemoTenant] = &[
    DemoTenant {
        slug: "acme-manufacturing",
        name: "ACME Manufacturing",
        tier: Tier::Professional,
        clerk_org: "org_demo_acme",
        env_name: "ACME",
        products: &[
            (
                "ACME-WID-001",
                "Industrial Widget",
                "components",
                "12.50",
                "29.99",
            ),
            (
                "ACME-GEAR-010",
                "Steel Gear Assembly",
                "components",
                "48.00",
                "99.00",
            ),
            (
                "ACME-MTR-100",
                "Servo Motor 100W",
                "motors",
                "85.00",
                "189.00",
            ),
        ],
    },
    DemoTenant {
        slug: "beta-industries",
        name: "Beta Industries",
        tier: Tier::Starter,
        clerk_org: "org_demo_beta",
        env_name: "BETA",
        products: &[
            (
                "BETA-PUMP-01",
                "Hydraulic Pump",
                "hydraulics",
                "210.00",
                "420.00",
            ),
            (
                "BETA-VALVE-02",
                "Check Valve",
                "hydraulics",
                "14.00",
                "32.50",
            ),
        ],
    },
];

/// The demo members of each tenant: one per role.
const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

fn demo_user_id(slug: &str, role: Role) -> String {
    format!("user_demo_{}_{}", slug.replace('-', "_"), role.as_str())
}

/// Says on stderr, hard to miss, that this service trusts a key anyone can read.
pub fn banner(listen: SocketAddr) {
    let line = "!".repeat(78);
    eprintln!(
        "{line}\n!! DEMO MODE on {listen}: tokens signed with the PUBLIC development key\n\
         !! (dev/demo-signing-key.pem) are accepted. Anyone who can reach this address can\n\
         !! act as any demo user. Never expose it; set CLERK_JWKS_URL and CLERK_ISSUER (and\n\
         !! pass --no-demo) for anything but a local trial.\n{line}"
    );
    tracing::warn!(%listen, "demo mode: the public development key is trusted");
}

/// Makes sure the demo tenants exist and prints, for each, a ready token and `curl`
/// examples against `addr`.
pub async fn announce(pool: &PgPool, auth: &Authenticator, addr: SocketAddr) -> anyhow::Result<()> {
    let tenants = ensure_demo_tenants(pool).await?;
    println!(
        "\nDemo mode: tokens below are signed with the development key and accepted only by this demo."
    );
    for (tenant, demo) in tenants.iter().zip(DEMO) {
        println!(
            "\n{} ({} plan), one member per role — tokens valid 24 h:",
            tenant.name,
            tenant.subscription_tier.as_str(),
        );
        for role in ROLES {
            let token = auth.sign_demo_token(
                &demo_user_id(demo.slug, role),
                demo.clerk_org,
                Duration::from_secs(24 * 3600),
            )?;
            println!("  export {}='{token}'", token_variable(demo, role));
        }
        println!(
            "  curl -s -H \"Authorization: Bearer $TOKEN_{}\" http://{addr}/api/v1/tenant",
            demo.env_name
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $TOKEN_{}_VIEWER\" 'http://{addr}/api/v1/products?limit=5'",
            demo.env_name
        );
    }
    println!(
        "\nTOKEN_<TENANT> is the owner's; _ADMIN, _MEMBER and _VIEWER are those roles' (docs/api.md, Roles)."
    );
    Ok(())
}

/// Prints where the operators' console is and how to sign in: with the admin token when
/// one was configured, else through a link carrying this process's console token.
pub fn announce_console(addr: SocketAddr, token: &str, admin_token_set: bool) {
    if admin_token_set {
        println!(
            "\nOperators' console: http://{addr}/console (sign in with CAPLIQUIFY_ADMIN_TOKEN)"
        );
    } else {
        println!(
            "\nOperators' console (this link fills in the sign-in form; its token lasts until the service stops):\n  http://{addr}/console/sign-in?token={token}"
        );
    }
}

/// The shell variable a demo token is printed into: `TOKEN_ACME` for the owner (what
/// scripts read), `TOKEN_ACME_VIEWER` and so on for the other roles.
fn token_variable(demo: &DemoTenant, role: Role) -> String {
    match role {
        Role::Owner => format!("TOKEN_{}", demo.env_name),
        other => format!(
            "TOKEN_{}_{}",
            demo.env_name,
            other.as_str().to_ascii_uppercase()
        ),
    }
}

/// Provisions the demo tenants that do not exist yet and fills them; returns all of them.
pub async fn ensure_demo_tenants(pool: &PgPool) -> Result<Vec<Tenant>, TenancyError> {
    let tenancy = Tenancy::new(pool.clone(), 30);
    let actor = Actor::operator();
    let mut out = Vec::new();
    for demo in DEMO {
        let tenant = match registry::find(pool, demo.slug).await {
            Ok(t) => t,
            Err(TenancyError::UnknownTenant(_)) => {
                let new = NewTenant::parse(demo.slug, demo.name, demo.tier, demo.clerk_org)?;
                let tenant = tenancy.provision(&new, &actor).await?;
                fill(pool, &tenant, demo).await?;
                tenant
            }
            Err(e) => return Err(e),
        };
        out.push(tenant);
    }
    Ok(out)
}

/// Sample rows in one tenant transaction: a company, products, three years of daily sales,
/// inventory, demand forecasts and three months of working-capital metrics computed by the
/// engine.
async fn fill(pool: &PgPool, tenant: &Tenant, demo: &DemoTenant) -> Result<(), TenancyError> {
    // Members are public rows; the tenant's role cannot write them.
    let mut members = pool.begin().await?;
    for role in ROLES {
        let (user, email, name) = (
            demo_user_id(demo.slug, role),
            format!("{}@{}.example", role.as_str(), demo.slug),
            format!("Demo {}", role.as_str()),
        );
        let profile = crate::tenancy::members::Profile {
            clerk_user_id: &user,
            email: &email,
            full_name: Some(&name),
        };
        crate::tenancy::members::upsert(&mut members, tenant.id, &profile, role, None, None)
            .await?;
    }
    members.commit().await?;
    let mut tx = scope::begin(pool, &tenant.scope()?).await?;
    let company: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO companies (name, legal_name, currency, fiscal_year_end, settings)
         VALUES ($1, $1 || ' Ltd', 'USD', '12-31', $2) RETURNING id",
    )
    .bind(demo.name)
    .bind(json!({ "demo": true }))
    .fetch_one(&mut *tx)
    .await?;
    for (i, (sku, name, category, cost, price)) in demo.products.iter().enumerate() {
        let product: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO products (company_id, sku, name, category, unit_cost, unit_price,
                                   reorder_point, reorder_quantity, lead_time_days)
             VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric, 50, 200, 14) RETURNING id",
        )
        .bind(company)
        .bind(sku)
        .bind(name)
        .bind(category)
        .bind(cost)
        .bind(price)
        .fetch_one(&mut *tx)
        .await?;
        let i = i as i32;
        // Three years of daily sales with a yearly season (peak in spring), quieter
        // weekends, growth of about 15 % a year and a little deterministic noise: enough
        // history for the forecasts to find a season (docs/domain.md).
        sqlx::query(
            "INSERT INTO sales (company_id, product_id, sale_date, quantity, unit_price, total_amount, channel, customer_name)
             SELECT $1, $2, day, q, $3::numeric, q * $3::numeric,
                    (ARRAY['direct', 'distributor', 'online'])[1 + d % 3], 'Customer ' || (1 + d % 7)
               FROM generate_series(1, 1095) d,
                    LATERAL (SELECT current_date - d AS day) t,
                    LATERAL (SELECT greatest(0, round(
                        (8 + 2 * $4) * (1 + 0.3 * sin(2 * pi() * extract(doy FROM day) / 365.0))
                        * (CASE WHEN extract(isodow FROM day) >= 6 THEN 0.5 ELSE 1.1 END)
                        * (1 + 0.15 * (1095 - d) / 365.0)
                        + ((d * 7 + $4) % 5) - 2))::int AS q) x",
        )
        .bind(company)
        .bind(product)
        .bind(price)
        .bind(i)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO inventory (company_id, product_id, warehouse_location, quantity_on_hand,
                                    quantity_reserved, unit_cost, last_counted_at)
             VALUES ($1, $2, 'Main warehouse', 300 + 40 * $4, 25, $3::numeric, now())",
        )
        .bind(company)
        .bind(product)
        .bind(cost)
        .bind(i)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO forecasts (company_id, product_id, forecast_date, forecast_type, model_type,
                                    predicted_value, lower_bound, upper_bound, confidence_level)
             SELECT $1, $2, current_date + 30 * m, 'demand', 'ensemble',
                    450 + 10 * m, 380 + 10 * m, 520 + 10 * m, 85.5
               FROM generate_series(1, 3) m",
        )
        .bind(company)
        .bind(product)
        .execute(&mut *tx)
        .await?;
    }
    // The last three complete months, computed by the engine from the sales and stock
    // above, with cash falling 5 000 a month (so the runway has a burn to go by).
    let this_month = chrono::Utc::now()
        .date_naive()
        .with_day(1)
        .unwrap_or_default();
    for months_back in (1..=3_u32).rev() {
        let end = this_month
            .checked_sub_months(chrono::Months::new(months_back - 1))
            .and_then(|first| first.pred_opt())
            .unwrap_or(this_month);
        let period = wc::Period::ending(wc::PeriodType::Monthly, end)
            .map_err(|e| TenancyError::Database(sqlx::Error::Protocol(e.to_string())))?;
        let totals = wc::period_totals(&mut tx, company, &period).await?;
        let inputs = wc::MetricInputs {
            period,
            revenue: totals.revenue,
            cogs: totals.cogs,
            inventory: totals.inventory,
            cash: Decimal::from(250_000 - 5_000 * (3 - i64::from(months_back))),
            accounts_receivable: Decimal::from(180_000),
            accounts_payable: Decimal::from(140_000),
            short_term_debt: Decimal::from(60_000),
            earlier_cash: wc::earlier_cash(&mut tx, company, period.kind, period.end).await?,
        };
        let metrics = wc::compute(&inputs)
            .map_err(|e| TenancyError::Database(sqlx::Error::Protocol(e.to_string())))?;
        wc::store(&mut tx, company, &inputs, &metrics).await?;
    }
    tx.commit().await?;
    Ok(())
}
