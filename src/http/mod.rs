//! The HTTP service (`capliquify serve`). For now it serves the operations endpoints
//! (`/healthz`, `/readyz`); the tenant data API and the webhooks are built on top of it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

use crate::config::Settings;
use crate::db::Database;
use crate::demo;
use crate::tenancy::migrate;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "CAPLIQUIFY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// On the embedded database, do not create the demo tenants.
    #[arg(long)]
    pub no_demo: bool,
}

/// Runs the service until SIGTERM or Ctrl-C, then drains and stops the embedded cluster
/// if this process started it.
pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<()> {
    let db = Database::open(settings).await?;
    let result = run(&db, &args).await;
    db.close().await?;
    result
}

async fn run(db: &Database, args: &ServeArgs) -> anyhow::Result<()> {
    if db.is_embedded() {
        prepare_embedded(&db.pool, !args.no_demo).await?;
    } else {
        migrate::ensure_current(&db.pool).await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (CAPLIQUIFY_LISTEN)", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    println!("capliquify listening on http://{addr}  (GET /healthz, /readyz; Ctrl-C stops)");
    axum::serve(listener, router(db.pool.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    tracing::info!("shut down");
    Ok(())
}

/// The embedded cluster is a development database: bring it and every tenant current, and
/// add the demo tenants.
async fn prepare_embedded(pool: &PgPool, with_demo: bool) -> anyhow::Result<()> {
    let tenant_migrations = migrate::tenant_migrations();
    let latest = migrate::latest_version(tenant_migrations);
    migrate::migrate_public(pool, tenant_migrations).await?;
    let pending = migrate::pending_tenants(pool, latest).await?;
    let report = migrate::migrate_fleet(pool, pending, latest, 2, Arc::new(|_| {})).await;
    for failed in &report.failed {
        tracing::warn!(tenant = %failed.slug, error = ?failed.error, "tenant migration failed");
    }
    if with_demo {
        for tenant in demo::ensure_demo_tenants(pool).await? {
            println!(
                "demo tenant {:<20} {} ({}), schema {}",
                tenant.slug,
                tenant.name,
                tenant.subscription_tier.as_str(),
                tenant.schema_name
            );
        }
    }
    Ok(())
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .with_state(pool)
}

/// Ready when the database answers and its migrations are as new as this build.
async fn readyz(State(pool): State<PgPool>) -> (StatusCode, Json<serde_json::Value>) {
    match migrate::ensure_current(&pool).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            let reason = match err {
                migrate::MigrateError::NotMigrated(_) => "migrations pending",
                _ => "database unavailable",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "reason": reason })),
            )
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}
