//! Tenant isolation under concurrent load: 20 tenants, more than 10,000 interleaved requests
//! from 32 concurrent clients through an API pool of 4 connections, every response checked
//! to hold only the caller's rows. Zero leaks is the only acceptable result.
//!
//! Why this shape: a pooled connection serves many tenants one after the other, and the
//! tenant scope (`SET LOCAL search_path` inside the request's transaction) must never
//! survive into the next checkout. With 8× more concurrent requests than connections, every
//! connection is handed from tenant to tenant thousands of times, in random order, while
//! other requests write; a scope that leaked (session-level `SET`, a transaction left open,
//! a cached plan bound to another schema) would show up as a foreign row.
//!
//! What every request checks (a mismatch in data is a *leak*, a wrong status or an
//! unreadable body a *failure*; both must be zero):
//!
//! - `GET /api/v1/products` with assorted limits and sorts, sometimes following
//!   `next_cursor` (now and then replaying the cursor with *another* tenant's token): every
//!   row's `sku` and `name` start with the caller's slug, its `company_id` is the caller's
//!   company, and its id is not one known to belong to another tenant.
//! - `GET /api/v1/products/{id}`: the caller's own ids answer 200 with that row; another
//!   tenant's ids answer 404 `not_found` (a foreign id never resolves).
//! - `POST /api/v1/products` with the caller's prefix answers 201 with the caller's company;
//!   with another tenant's `company_id` it answers 422 `reference_not_found` (the foreign
//!   key only sees the caller's schema).
//! - `GET /api/v1/tenant`: the slug is the caller's.
//!
//! Afterwards the database itself is checked with schema-qualified SQL: each tenant's
//! `products` holds exactly its seed rows plus the rows it created, all with its prefix and
//! company; and `verify_tenant_isolation()` passes.
//!
//! Run: `cargo test --test it isolation_stress::` (50–65 s in a debug build on a busy 2-core machine;
//! `-- --nocapture` prints the counts).

use crate::common::api::TestApp;
use crate::common::stress::{self, Params};
use capliquify::http::HttpConfig;

/// Fewer connections than concurrent clients: requests queue for connections, so every
/// connection serves many tenants one after another.
const POOL_SIZE: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_twenty_tenants_never_see_each_others_rows() {
    let app = TestApp::spawn_with(HttpConfig::default(), POOL_SIZE).await;
    let base = app.url("");
    let params = Params {
        tenants: 20,
        tasks: 32,
        min_requests: 10_000,
        target_requests: 10_100,
    };
    let outcome = stress::run(&app, base, "iso", params).await;
    eprintln!(
        "{} requests, {} rows created in {:.1?}",
        outcome.requests, outcome.created, outcome.elapsed
    );
}
