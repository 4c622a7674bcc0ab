//! The isolation stress driver shared by `tests/isolation_stress.rs` (the API on its own
//! pool) and `tests/pgbouncer.rs` (the API through PgBouncer): many tenants, many concurrent
//! clients, interleaved reads, pages, foreign ids and writes, every response checked to hold
//! only the caller's rows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capliquify::access::Role;
use capliquify::billing::Tier;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::api::TestApp;

const SEED_PRODUCTS: usize = 10;
/// Pages followed at most per list request.
const MAX_PAGES: usize = 4;
/// Problems kept for the failure message.
const MAX_REPORTED: usize = 20;

const LIMITS: [Option<usize>; 6] = [None, Some(1), Some(3), Some(10), Some(50), Some(200)];
const SORTS: [Option<&str>; 7] = [
    None,
    Some("name"),
    Some("-name"),
    Some("sku"),
    Some("-sku"),
    Some("created_at"),
    Some("-created_at"),
];

/// One tenant as the clients see it.
struct Fixture {
    slug: String,
    schema: String,
    /// `<slug>-`: two-digit slugs make no prefix a prefix of another tenant's.
    prefix: String,
    company: Uuid,
    seed_ids: Vec<Uuid>,
    /// Tokens of all four roles (reads) and of the roles that may write.
    read_tokens: Vec<String>,
    write_tokens: Vec<String>,
    /// Products created through the API during the run.
    created: AtomicUsize,
}

struct Shared {
    /// Where the requests go (`http://127.0.0.1:<port>`).
    base: String,
    params: Params,
    client: reqwest::Client,
    tenants: Vec<Fixture>,
    /// Every product id known so far, with the index of the tenant that owns it.
    owner_of: Mutex<HashMap<Uuid, usize>>,
    requests: AtomicUsize,
    leaks: AtomicUsize,
    failures: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

/// xorshift64*: deterministic per task, so a failing interleaving is reproducible in kind.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A tenant index other than `t`.
    fn other_than(&mut self, t: usize, n: usize) -> usize {
        (t + 1 + self.below(n - 1)) % n
    }
}

impl Shared {
    fn leak(&self, what: String) {
        self.leaks.fetch_add(1, Ordering::Relaxed);
        self.note(format!("LEAK: {what}"));
    }

    fn failure(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.note(format!("FAILURE: {what}"));
    }

    fn note(&self, what: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < MAX_REPORTED {
            problems.push(what);
        }
    }

    /// Sends one request; `None` (counted as a failure) when it got no readable answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let result = async {
            let response = req.send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        }
        .await;
        match result {
            Ok((status, text)) => match serde_json::from_str(&text) {
                Ok(body) => Some((status, body)),
                Err(_) => {
                    self.failure(format!("{method} {path}: {status}, body not JSON: {text}"));
                    None
                }
            },
            Err(e) => {
                self.failure(format!("{method} {path}: {e}"));
                None
            }
        }
    }

    /// Checks that `row` is a product of tenant `t`; anything else is a leak.
    fn check_product(&self, t: usize, row: &Value, context: &str) {
        let fx = &self.tenants[t];
        let own_text = |field: &str| {
            row[field]
                .as_str()
                .is_some_and(|s| s.starts_with(&fx.prefix))
        };
        let id = row["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let company = row["company_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok());
        let foreign_owner = id
            .and_then(|id| self.owner_of.lock().unwrap().get(&id).copied())
            .filter(|&owner| owner != t);
        if !own_text("sku")
            || !own_text("name")
            || company != Some(fx.company)
            || foreign_owner.is_some()
        {
            self.leak(format!(
                "{context}: caller {} got row {row} (id owned by tenant {foreign_owner:?})",
                fx.slug
            ));
        }
    }

    /// `GET /products` with a random limit and sort, sometimes following the cursor.
    async fn list(&self, rng: &mut Rng, t: usize) {
        let limit = *rng.pick(&LIMITS);
        let sort = *rng.pick(&SORTS);
        let follow = rng.below(3) == 0;
        let mut caller = t;
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let mut params = Vec::new();
            if let Some(limit) = limit {
                params.push(format!("limit={limit}"));
            }
            if let Some(sort) = sort {
                params.push(format!("sort={sort}"));
            }
            if let Some(cursor) = &cursor {
                params.push(format!("cursor={cursor}"));
            }
            let path = format!("/api/v1/products?{}", params.join("&"));
            let fx = &self.tenants[caller];
            let token = rng.pick(&fx.read_tokens);
            let Some((status, body)) = self.send(Method::GET, &path, token, None).await else {
                return;
            };
            let context = format!("GET {path} page {page}");
            if status != StatusCode::OK {
                self.failure(format!("{context} as {}: {status} {body}", fx.slug));
                return;
            }
            let Some(rows) = body["data"].as_array() else {
                self.failure(format!("{context}: no data array: {body}"));
                return;
            };
            let max = limit.unwrap_or(50);
            if rows.len() > max {
                self.failure(format!("{context}: {} rows over limit {max}", rows.len()));
            }
            for row in rows {
                self.check_product(caller, row, &context);
            }
            cursor = body["next_cursor"].as_str().map(str::to_owned);
            if !follow || cursor.is_none() {
                return;
            }
            // A cursor carries a sort key and an id, never a tenant: replayed by another
            // tenant it must page through that tenant's rows only.
            if rng.below(10) == 0 {
                caller = rng.other_than(caller, self.tenants.len());
            }
        }
    }

    /// `GET /products/{id}` of an own seed id (200, that row) or a foreign one (404).
    async fn get_one(&self, rng: &mut Rng, t: usize, foreign: bool) {
        let owner = if foreign {
            rng.other_than(t, self.tenants.len())
        } else {
            t
        };
        let id = *rng.pick(&self.tenants[owner].seed_ids);
        let fx = &self.tenants[t];
        let path = format!("/api/v1/products/{id}");
        let token = rng.pick(&fx.read_tokens);
        let Some((status, body)) = self.send(Method::GET, &path, token, None).await else {
            return;
        };
        let context = format!("GET {path} (owner {}) as {}", owner, fx.slug);
        match (foreign, status) {
            (false, StatusCode::OK) => {
                if body["id"] != json!(id) {
                    self.leak(format!("{context}: answered another row {body}"));
                }
                self.check_product(t, &body, &context);
            }
            (true, StatusCode::NOT_FOUND) if body["code"] == "not_found" => {}
            (true, StatusCode::OK) => self.leak(format!("{context}: foreign id resolved: {body}")),
            _ => self.failure(format!("{context}: {status} {body}")),
        }
    }

    /// `POST /products` with the caller's prefix; one in five names another tenant's
    /// company, which must not resolve from the caller's schema.
    async fn create(&self, rng: &mut Rng, t: usize, task: usize, n: usize) {
        let fx = &self.tenants[t];
        let foreign_company = rng.below(5) == 0;
        let company = if foreign_company {
            self.tenants[rng.other_than(t, self.tenants.len())].company
        } else {
            fx.company
        };
        let sku = format!("{}NEW-{task:02}-{n:04}", fx.prefix);
        let body = json!({
            "company_id": company, "sku": sku, "name": format!("{}New {task}/{n}", fx.prefix),
            "category": "stress", "unit_price": "9.99",
        });
        let token = rng.pick(&fx.write_tokens);
        let Some((status, reply)) = self
            .send(Method::POST, "/api/v1/products", token, Some(body))
            .await
        else {
            return;
        };
        let context = format!("POST {sku} (foreign company: {foreign_company})");
        match (foreign_company, status) {
            (false, StatusCode::CREATED) => {
                self.check_product(t, &reply, &context);
                if let Some(id) = reply["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    self.owner_of.lock().unwrap().insert(id, t);
                    fx.created.fetch_add(1, Ordering::Relaxed);
                }
            }
            (true, StatusCode::UNPROCESSABLE_ENTITY) if reply["code"] == "reference_not_found" => {}
            (true, StatusCode::CREATED) => {
                self.leak(format!(
                    "{context}: another tenant's company was referenced"
                ));
            }
            _ => self.failure(format!("{context}: {status} {reply}")),
        }
    }

    /// `GET /tenant`: the caller's own slug and usage.
    async fn tenant(&self, rng: &mut Rng, t: usize) {
        let fx = &self.tenants[t];
        let token = rng.pick(&fx.read_tokens);
        let Some((status, body)) = self.send(Method::GET, "/api/v1/tenant", token, None).await
        else {
            return;
        };
        if status != StatusCode::OK {
            self.failure(format!("GET /tenant as {}: {status} {body}", fx.slug));
        } else if body["slug"] != fx.slug.as_str() {
            self.leak(format!("GET /tenant as {}: answered {body}", fx.slug));
        } else if body["usage"]["entities"] != 1 || body["usage"]["users"] != 4 {
            // Usage is counted in the caller's schema (companies) and by tenant id (users).
            self.leak(format!("GET /tenant as {}: usage {body}", fx.slug));
        }
    }

    /// One client: operations on randomly chosen tenants until the request target is met.
    async fn client(self: Arc<Self>, task: usize) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) * 0x1000_0000_01b3));
        for n in 0..2 * self.params.target_requests / self.params.tasks {
            if self.requests.load(Ordering::Relaxed) >= self.params.target_requests {
                break;
            }
            let t = rng.below(self.tenants.len());
            match rng.below(100) {
                0..55 => self.list(&mut rng, t).await,
                55..70 => self.get_one(&mut rng, t, false).await,
                70..80 => self.get_one(&mut rng, t, true).await,
                80..90 => self.create(&mut rng, t, task, n).await,
                _ => self.tenant(&mut rng, t).await,
            }
        }
    }
}

/// Provisions tenant `i` (slug `<label>-<i>`) with its members, one company and `SEED_PRODUCTS` products.
async fn fixture(app: &TestApp, label: &str, i: usize) -> Fixture {
    let slug = format!("{label}-{i:02}");
    let t = app.tenant(&slug, Tier::Professional).await;
    let company = Uuid::parse_str(&app.company(&t, &format!("{slug} Co")).await).unwrap();
    let prefix = format!("{slug}-");
    let schema = t.tenant.schema_name.clone();
    // Seeded with schema-qualified SQL: the API's own writes are exercised during the run.
    let seed_ids: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".products (company_id, sku, name, unit_price)
         SELECT $1, $2 || 'SKU-' || n, $2 || 'Widget ' || lpad(n::text, 2, '0'), 10 + n
           FROM generate_series(1, {SEED_PRODUCTS}) AS n
         RETURNING id"
    )))
    .bind(company)
    .bind(&prefix)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let token = |role| app.token_for(&t, role);
    Fixture {
        read_tokens: [Role::Viewer, Role::Member, Role::Admin, Role::Owner]
            .map(token)
            .to_vec(),
        write_tokens: [Role::Member, Role::Admin, Role::Owner].map(token).to_vec(),
        slug,
        schema,
        prefix,
        company,
        seed_ids,
        created: AtomicUsize::new(0),
    }
}

/// Sizes of one stress run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub tenants: usize,
    /// Concurrent HTTP clients.
    pub tasks: usize,
    pub min_requests: usize,
    /// Clients stop once this many requests were sent (a little above `min_requests`).
    pub target_requests: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub requests: usize,
    pub created: usize,
    pub elapsed: Duration,
}

/// Provisions `params.tenants` tenants through `app` (slugs `<label>-NN`), sends the requests
/// to `base`, and asserts zero leaks, zero failures, the request count, and that the
/// database holds exactly what each tenant was answered.
pub async fn run(app: &TestApp, base: String, label: &str, params: Params) -> Outcome {
    let mut tenants = Vec::with_capacity(params.tenants);
    for i in 0..params.tenants {
        tenants.push(fixture(app, label, i).await);
    }
    let owner_of = tenants
        .iter()
        .enumerate()
        .flat_map(|(t, fx)| fx.seed_ids.iter().map(move |id| (*id, t)))
        .collect();
    let client = reqwest::Client::builder()
        // Bounded: a stuck request fails the test instead of hanging it.
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(params.tasks)
        .build()
        .unwrap();
    let shared = Arc::new(Shared {
        base,
        params,
        client,
        tenants,
        owner_of: Mutex::new(owner_of),
        requests: AtomicUsize::new(0),
        leaks: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        problems: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for task in 0..params.tasks {
        clients.spawn(shared.clone().client(task));
    }
    while let Some(joined) = clients.join_next().await {
        joined.expect("a client task panicked");
    }
    let elapsed = started.elapsed();
    let requests = shared.requests.load(Ordering::Relaxed);
    let leaks = shared.leaks.load(Ordering::Relaxed);
    let failures = shared.failures.load(Ordering::Relaxed);
    let created: usize = shared
        .tenants
        .iter()
        .map(|fx| fx.created.load(Ordering::Relaxed))
        .sum();
    println!(
        "{requests} requests from {} clients over {} tenants in {:.1} s ({:.0}/s); {created} \
         products created; {leaks} leaks, {failures} failures",
        params.tasks,
        params.tenants,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    let problems = shared.problems.lock().unwrap().join("\n");
    assert_eq!(leaks, 0, "rows crossed tenants:\n{problems}");
    assert_eq!(failures, 0, "requests failed:\n{problems}");
    assert!(
        requests >= params.min_requests,
        "only {requests} requests were sent"
    );
    assert!(created > 0, "no product was created");
    // The database agrees: every tenant's table holds exactly its own rows.
    let owner_of = shared.owner_of.lock().unwrap().clone();
    for (t, fx) in shared.tenants.iter().enumerate() {
        let ids: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM \"{}\".products
              WHERE starts_with(sku::text, $1) AND starts_with(name::text, $1) AND company_id = $2",
            fx.schema
        )))
        .bind(&fx.prefix)
        .bind(fx.company)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        let total = app
            .db
            .scalar_i64(&format!("SELECT count(*) FROM \"{}\".products", fx.schema))
            .await;
        let expected = SEED_PRODUCTS + fx.created.load(Ordering::Relaxed);
        assert_eq!(
            total as usize,
            ids.len(),
            "{}: rows without its prefix or company",
            fx.slug
        );
        assert_eq!(ids.len(), expected, "{}: row count", fx.slug);
        let mine: HashSet<Uuid> = owner_of
            .iter()
            .filter(|(_, owner)| **owner == t)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            ids.into_iter().collect::<HashSet<_>>(),
            mine,
            "{}: ids differ from the ones it was answered",
            fx.slug
        );
    }
    for (name, result, details) in app.db.verify().await {
        assert_ne!(result, "FAIL", "verify_tenant_isolation {name}: {details}");
    }
    Outcome {
        requests,
        created,
        elapsed,
    }
}
