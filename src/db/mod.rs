//! The database handle: a pool on `DATABASE_URL` or on the embedded cluster, and the
//! tenant-scoped transaction every unit of tenant work runs in.

pub mod citus;
pub mod cluster;
pub mod embedded;
pub mod lanes;
pub mod privileges;
pub mod recycle;
pub mod roles;
pub mod scope;
pub mod tls;

/// Implements `sqlx::Type` for a Rust enum mapped to an enum type of the `public` schema
/// (the enum itself derives `sqlx::Encode` and `sqlx::Decode`).
///
/// Written by hand because sqlx resolves a custom type's OID by name through the session's
/// `search_path`, and inside a tenant transaction that path holds only the tenant's schema:
/// the derived impl (unqualified name) then fails to bind. The schema-qualified name resolves
/// anywhere, and `compatible` accepts the bare name PostgreSQL reports for result columns.
macro_rules! public_enum_type {
    ($rust:ty, $sql:literal) => {
        impl sqlx::Type<sqlx::Postgres> for $rust {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::with_name(concat!("public.", $sql))
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                let name = sqlx::TypeInfo::name(ty);
                name == $sql || name == concat!("public.", $sql)
            }
        }
    };
}
pub(crate) use public_enum_type;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Settings;
use embedded::{EmbeddedCluster, EmbeddedOptions};
use recycle::Recycler;

pub use cluster::{ClusterName, Clusters};
pub use scope::TenantScope;

/// Name of the database the embedded cluster serves.
pub const EMBEDDED_DATABASE: &str = "capliquify";

/// An open database: the home pool, the pools of the other clusters (placements), and the
/// embedded cluster behind the home pool when there is one.
pub struct Database {
    /// The home cluster: `public` and the tenants placed `home`.
    pub pool: PgPool,
    pub clusters: Clusters,
    embedded: Option<EmbeddedCluster>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts (or reuses) the embedded cluster when it is unset.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        Self::open_with(settings, &PoolConfig::new(settings.db_max_connections)).await
    }

    /// [`Database::open`] with pools made as `pools` says (the service recycles connections).
    pub async fn open_with(settings: &Settings, pools: &PoolConfig) -> anyhow::Result<Self> {
        // Checked before anything starts.
        let others = cluster::parse_config(settings.clusters.as_deref().unwrap_or(""))?;
        let (url, embedded) = match &settings.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let cluster = start_embedded(settings).await?;
                (cluster.url(), Some(cluster))
            }
        };
        let pool = connect_with(&url, pools).await?;
        let clusters = Clusters::new(pool.clone(), others, pools);
        Ok(Self {
            pool,
            clusters,
            embedded,
        })
    }

    /// True when this process runs on the embedded cluster (a private development database).
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded cluster's URL for another role, with the cluster's generated password
    /// (which the roles capliquify creates there are given: [`Database::embedded_password`]).
    pub fn embedded_url_as(&self, user: &str) -> Option<String> {
        let cluster = self.embedded.as_ref()?;
        Some(cluster.url_as(user, EMBEDDED_DATABASE))
    }

    /// The embedded cluster's generated password (`superuser.password`), if embedded.
    pub fn embedded_password(&self) -> Option<&str> {
        self.embedded.as_ref().map(|c| c.password())
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.clusters.close().await;
        if let Some(cluster) = self.embedded
            && cluster.started_here()
        {
            tokio::task::spawn_blocking(move || cluster.stop())
                .await
                .context("stopping the embedded PostgreSQL cluster")??;
        }
        Ok(())
    }
}

/// Starts (or reuses) the embedded cluster under `settings.data_dir`.
pub async fn start_embedded(settings: &Settings) -> anyhow::Result<EmbeddedCluster> {
    let opts = EmbeddedOptions {
        root: settings.data_dir.clone(),
        durable: true,
        database: EMBEDDED_DATABASE.to_owned(),
    };
    let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&opts))
        .await
        .context("starting the embedded PostgreSQL cluster")??;
    Ok(cluster)
}

/// A pooled connection idle at least this long is pinged before it is handed out
/// ([`PoolConfig::options`]).
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How this process's pools are made: every pool, of every cluster, alike.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections per pool (`CAPLIQUIFY_DB_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Closes connections whose backend outgrew a memory budget (the service only:
    /// `CAPLIQUIFY_DB_BACKEND_MEMORY_MB`); commands run too briefly to need it.
    pub recycler: Option<Arc<Recycler>>,
    /// A connection idle at least this long is pinged before it is handed out
    /// ([`CHECK_IDLE_AFTER`] unless a test says otherwise).
    pub check_idle_after: Duration,
}

impl PoolConfig {
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            recycler: None,
            check_idle_after: CHECK_IDLE_AFTER,
        }
    }

    pub fn with_recycler(mut self, recycler: Option<Arc<Recycler>>) -> Self {
        self.recycler = recycler;
        self
    }

    /// The pool options every pool of this process is made with.
    ///
    /// A connection idle for less than `check_idle_after` ([`CHECK_IDLE_AFTER`]) is handed
    /// out without a ping.
    /// sqlx pings every connection as it is released (that also flushes an abandoned
    /// transaction's rollback; a dead one is dropped there), and by default again as it is
    /// acquired: two round trips besides the transaction's own three, each costing the
    /// backend and the service a wake-up and two system calls. The second ping is skipped
    /// for a connection the first one checked a moment ago, as HikariCP and PgBouncer
    /// (`server_check_delay`) do; one idle longer (a server restart, a network cut) is
    /// still pinged, and replaced if it is dead.
    pub fn options(&self) -> PgPoolOptions {
        let check_idle_after = self.check_idle_after;
        let options = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= check_idle_after {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        match &self.recycler {
            Some(recycler) => recycler.install(options),
            None => options,
        }
    }
}

/// A pool on `url` with the settings every command uses; TLS as the URL's `sslmode` and
/// `sslrootcert` say (see [`tls`]).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_with(url, &PoolConfig::new(max_connections)).await
}

/// [`connect`] with the pool made as `pools` says.
pub async fn connect_with(url: &str, pools: &PoolConfig) -> anyhow::Result<PgPool> {
    // The embedded cluster's URL is always valid: a bad URL is the operator's DATABASE_URL.
    let options: PgConnectOptions =
        tls::connect_options(url).map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    match pools.options().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(e) => {
            let hint = tls::hint(&options, &e)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            Err(anyhow::Error::new(e).context(format!(
                "cannot connect to PostgreSQL at {}{hint}",
                redact(url)
            )))
        }
    }
}

/// The URL without its password, for messages: the user-info password and the
/// `password` / `sslpassword` query parameters (libpq and sqlx take both forms) are masked.
pub fn redact(url: &str) -> String {
    const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            let secret_query = parsed
                .query_pairs()
                .any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref()));
            if secret_query {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_wherever_the_url_carries_them() {
        for url in [
            "postgres://app:hunter2@db:5432/capliquify",
            "postgres://app@db/capliquify?password=hunter2&sslmode=require",
            "postgres://app@db/capliquify?sslmode=require&PASSWORD=x&password=hunter2",
            "postgres://app@db/capliquify?sslpassword=hunter2",
            "postgres://app@db/capliquify?password=hunter%32",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("hunter"), "{url} -> {shown}");
            assert!(shown.contains("***") && shown.contains("db"), "{shown}");
        }
        assert!(redact("postgres://app@db/capliquify?sslmode=require").contains("sslmode=require"));
        assert_eq!(redact("not a url ?password=hunter2"), "<unparsable URL>");
    }
}
