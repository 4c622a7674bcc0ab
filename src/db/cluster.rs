//! Placements: which PostgreSQL cluster holds a tenant's schema (DESIGN.md §12).
//!
//! The home cluster (`DATABASE_URL`, or the embedded one) holds `public` — the registry,
//! users, subscriptions and the audit trail — and every tenant placed `home`. Further
//! clusters are named in `CAPLIQUIFY_CLUSTERS`; [`Clusters`] keeps one pool per cluster and
//! hands out the pool of a tenant's placement.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

/// The name of the cluster that holds `public`.
pub const HOME: &str = "home";

/// A cluster's name as configuration and `public.tenants.cluster` spell it: 1 to 31 of
/// a-z, 0-9 and '_', starting with a letter (the same rule is a CHECK on the column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster name {0:?}: must be 1 to 31 of a-z, 0-9 and '_', starting with a letter")]
pub struct ClusterNameError(String);

impl ClusterName {
    pub fn parse(input: &str) -> Result<Self, ClusterNameError> {
        let ok = (1..=31).contains(&input.len())
            && input.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(ClusterNameError(input.chars().take(40).collect()))
        }
    }

    pub fn home() -> Self {
        Self(HOME.to_owned())
    }

    pub fn is_home(&self) -> bool {
        self.0 == HOME
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What can be wrong with `CAPLIQUIFY_CLUSTERS`, or with a cluster a tenant names.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("CAPLIQUIFY_CLUSTERS: {0}")]
    Config(String),
    #[error(
        "no cluster named {0:?} is configured (known: {1}); name it in CAPLIQUIFY_CLUSTERS=\"name=postgres://…;…\""
    )]
    Unknown(String, String),
}

/// The secondary clusters of `CAPLIQUIFY_CLUSTERS` (`name=url;name=url`), checked once at
/// start: names valid and unique, `home` not redefined, every URL a PostgreSQL URL.
pub fn parse_config(value: &str) -> Result<Vec<(ClusterName, PgConnectOptions)>, ClusterError> {
    let mut out: Vec<(ClusterName, PgConnectOptions)> = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry.split_once('=').ok_or_else(|| {
            ClusterError::Config(
                "every entry must be name=postgres://… (entries separated by ';')".into(),
            )
        })?;
        let name =
            ClusterName::parse(name.trim()).map_err(|e| ClusterError::Config(e.to_string()))?;
        if name.is_home() {
            return Err(ClusterError::Config(
                "\"home\" is the cluster of DATABASE_URL (or the embedded one); give the others other names".into(),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ClusterError::Config(format!(
                "cluster \"{name}\" is named twice"
            )));
        }
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ClusterError::Config(format!(
                "the URL of cluster {name} must start with postgres:// (got {})",
                super::redact(url)
            )));
        }
        let options = super::tls::connect_options(url)
            .map_err(|e| ClusterError::Config(format!("the URL of cluster {name}: {e}")))?;
        out.push((name, options));
    }
    Ok(out)
}

/// One pool per cluster. Cheap to clone (pools are shared handles).
#[derive(Debug, Clone)]
pub struct Clusters {
    home: PgPool,
    others: BTreeMap<ClusterName, PgPool>,
}

impl Clusters {
    /// Only the home cluster.
    pub fn single(home: PgPool) -> Self {
        Self {
            home,
            others: BTreeMap::new(),
        }
    }

    /// The home pool plus lazily connecting pools on `others`: a secondary cluster that is
    /// down does not stop the service from serving the tenants elsewhere.
    pub fn new(
        home: PgPool,
        others: Vec<(ClusterName, PgConnectOptions)>,
        pools: &super::PoolConfig,
    ) -> Self {
        let others = others
            .into_iter()
            .map(|(name, options)| (name, pools.options().connect_lazy_with(options)))
            .collect();
        Self { home, others }
    }

    /// Adds (or replaces) a secondary cluster's pool.
    pub fn with(mut self, name: ClusterName, pool: PgPool) -> Self {
        self.others.insert(name, pool);
        self
    }

    /// The same clusters with another home pool (the embedded service's login role).
    pub fn with_home(mut self, home: PgPool) -> Self {
        self.home = home;
        self
    }

    pub fn home(&self) -> &PgPool {
        &self.home
    }

    /// The pool of cluster `name`.
    pub fn pool(&self, name: &ClusterName) -> Result<&PgPool, ClusterError> {
        if name.is_home() {
            return Ok(&self.home);
        }
        self.others
            .get(name)
            .ok_or_else(|| ClusterError::Unknown(name.to_string(), self.names().join(", ")))
    }

    /// Parses `name` and returns it with its pool.
    pub fn named(&self, name: &str) -> Result<(ClusterName, &PgPool), ClusterError> {
        let parsed = ClusterName::parse(name)
            .map_err(|_| ClusterError::Unknown(name.to_owned(), self.names().join(", ")))?;
        let pool = self.pool(&parsed)?;
        Ok((parsed, pool))
    }

    /// Every cluster's name, `home` first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(HOME.to_owned())
            .chain(self.others.keys().map(|n| n.to_string()))
            .collect()
    }

    /// The secondary clusters.
    pub fn secondaries(&self) -> impl Iterator<Item = (&ClusterName, &PgPool)> {
        self.others.iter()
    }

    pub async fn close(&self) {
        for pool in self.others.values() {
            pool.close().await;
        }
        self.home.close().await;
    }
}

/// Only the home cluster (the pool given).
impl From<PgPool> for Clusters {
    fn from(home: PgPool) -> Self {
        Self::single(home)
    }
}

impl From<&PgPool> for Clusters {
    fn from(home: &PgPool) -> Self {
        Self::single(home.clone())
    }
}

impl From<&Clusters> for Clusters {
    fn from(clusters: &Clusters) -> Self {
        clusters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_the_rule() {
        assert!(ClusterName::parse("eu2").is_ok());
        assert!(ClusterName::parse("us_east_1").is_ok());
        for bad in ["", "EU", "1eu", "eu-2", "a\"b", &"x".repeat(32)] {
            assert!(ClusterName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cluster_setting_is_checked_with_clear_errors() {
        let ok = parse_config("eu2=postgres://u@h:5432/db; us1=postgresql://u@h/db;").unwrap();
        assert_eq!(
            ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["eu2", "us1"]
        );
        let err = |v: &str| parse_config(v).unwrap_err().to_string();
        assert!(err("eu2").contains("name=postgres://"));
        assert!(err("EU=postgres://h/db").contains("invalid cluster name"));
        assert!(err("home=postgres://h/db").contains("\"home\""));
        assert_eq!(
            err("eu2=postgres://h/db;eu2=postgres://h/db"),
            "CAPLIQUIFY_CLUSTERS: cluster \"eu2\" is named twice",
            "the name as the operator typed it, not a Rust debug form"
        );
        assert!(err("a=mysql://h/db").contains("must start with postgres://"));
        assert!(
            !err("a=mysql://u:secret@h/db").contains("secret"),
            "passwords are redacted"
        );
    }
}
