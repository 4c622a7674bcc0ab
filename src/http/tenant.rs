//! `GET /api/v1/tenant`: the caller's tenant — plan, status, limits, features and usage.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::context::Caller;
use super::error::ApiError;
use crate::access::Act;
use crate::billing::{Features, SubscriptionStatus, Tier};

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOverview {
    pub slug: String,
    pub name: String,
    pub tier: Tier,
    pub status: SubscriptionStatus,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub limits: Limits,
    pub features: Features,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub max_users: Option<i32>,
    pub max_entities: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub users: i64,
    pub entities: i64,
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantOverview>, ApiError> {
    caller.require(Act::ReadData)?;
    let tenant = &caller.tenant;
    // Members are public rows in the home registry (read as the service); companies are the
    // tenant's own, on its cluster (read in its transaction, as its role).
    let users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.users WHERE tenant_id = $1 AND removed_at IS NULL",
    )
    .bind(tenant.scope.id)
    .fetch_one(&state.pool)
    .await?;
    let mut tx = state.begin(&caller).await?;
    let entities: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(TenantOverview {
        slug: tenant.scope.slug.to_string(),
        name: tenant.name.clone(),
        tier: tenant.tier,
        status: tenant.status,
        trial_ends_at: tenant.trial_ends_at,
        limits: Limits {
            max_users: tenant.max_users,
            max_entities: tenant.max_entities,
        },
        features: tenant.features.clone(),
        usage: Usage { users, entities },
    }))
}
