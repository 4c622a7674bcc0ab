//! Settings shared by every command, read once from flags or the environment.

use std::path::PathBuf;

/// Where the database is and how tenants are kept. Every setting has a flag and an
/// environment variable; the README's configuration table lists them.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL. When unset, a private cluster is started from the installed
    /// PostgreSQL binaries under --data-dir (the embedded default).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder of the embedded PostgreSQL cluster (used only when DATABASE_URL is unset).
    #[arg(
        long,
        env = "CAPLIQUIFY_DATA_DIR",
        default_value = ".capliquify",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Days a soft-deleted tenant can still be restored; purge is allowed after them.
    #[arg(long, env = "CAPLIQUIFY_DELETION_GRACE_DAYS", default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub grace_days: u32,

    /// Days a tenant may stay past due (payment failed) before the lifecycle job suspends it.
    #[arg(long, env = "CAPLIQUIFY_PAST_DUE_GRACE_DAYS", default_value_t = 7, global = true,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub past_due_grace_days: u32,

    /// Most database connections this process opens.
    #[arg(long, env = "CAPLIQUIFY_DB_MAX_CONNECTIONS", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}
