use chrono::{DateTime, Utc};

use super::ident::{SchemaNameError, SlugError};

/// What can go wrong with a tenant operation. Every message names the tenant and, where
/// there is one, the way forward.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error(transparent)]
    Slug(#[from] SlugError),
    #[error(transparent)]
    SchemaName(#[from] SchemaNameError),
    #[error(transparent)]
    ClusterName(#[from] crate::db::cluster::ClusterNameError),
    #[error(transparent)]
    Cluster(#[from] crate::db::cluster::ClusterError),
    #[error(
        "tenant {slug:?} is placed on cluster {cluster:?}: {act} works on home tenants only; move it home first (`capliquify tenant move {slug} --to home`)"
    )]
    NotHome {
        slug: String,
        cluster: String,
        act: &'static str,
    },
    #[error("invalid tenant name: {0}")]
    InvalidName(&'static str),
    #[error(
        "invalid Clerk organization id {0:?}: must be 1 to 255 visible characters without spaces (e.g. org_2abc123)"
    )]
    InvalidClerkOrganization(String),
    #[error("a trial can be extended by 1 to 90 days at once, not {0}")]
    InvalidTrialExtension(u32),
    #[error("a tenant with slug {0:?} already exists")]
    SlugTaken(String),
    #[error("Clerk organization {0:?} already has a tenant")]
    ClerkOrganizationTaken(String),
    #[error("no tenant with slug {0:?} (see `capliquify tenant list --all`)")]
    UnknownTenant(String),
    #[error("tenant {slug:?} is {state}: {hint}")]
    WrongState {
        slug: String,
        state: &'static str,
        hint: &'static str,
    },
    #[error(
        "tenant {slug:?} is in its deletion grace period until {until}; to purge it now, pass --force and type the slug again with --confirm"
    )]
    InGracePeriod { slug: String, until: DateTime<Utc> },
    #[error(
        "the grace period of tenant {slug:?} ended on {ended}; pass --force to undelete it anyway"
    )]
    GracePeriodOver { slug: String, ended: DateTime<Utc> },
    #[error("confirmation {given:?} does not match the slug {slug:?}; nothing was purged")]
    ConfirmationMismatch { slug: String, given: String },
    #[error(
        "schema {schema} of tenant {slug:?} has no migration history but holds data in {tables}; it was left untouched — move the data out, drop the schema, then run repair again"
    )]
    UnmanagedSchemaWithData {
        slug: String,
        schema: String,
        tables: String,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl TenancyError {
    /// Maps unique violations on the registry to the errors that name the duplicate.
    pub(crate) fn from_insert(err: sqlx::Error, slug: &str, clerk_org: &str) -> Self {
        if let Some(db) = err.as_database_error() {
            match db.constraint() {
                Some("tenants_slug_key") => return Self::SlugTaken(slug.to_owned()),
                Some("tenants_clerk_organization_id_key") => {
                    return Self::ClerkOrganizationTaken(clerk_org.to_owned());
                }
                _ => {}
            }
        }
        Self::Database(err)
    }
}
