//! Settings shared by every command, read once from flags or the environment.

use std::path::PathBuf;

/// Help headings of the settings: every command accepts them (`global`), and each command's
/// help shows the groups it uses (`cli::command`).
pub const DATABASE_OPTIONS: &str = "Database options";
pub const KEYS_OPTIONS: &str = "Credential key options";
pub const LIFECYCLE_OPTIONS: &str = "Tenant lifecycle options";
pub const BACKUP_OPTIONS: &str = "Backup options";

/// Where the database is and how tenants are kept. Every setting has a flag and an
/// environment variable; the README's configuration table lists them.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL. When unset, a private cluster is started from the installed
    /// PostgreSQL binaries under --data-dir (the embedded default).
    #[arg(long, env = "DATABASE_URL", global = true, help_heading = DATABASE_OPTIONS, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder of the embedded PostgreSQL cluster (used only when DATABASE_URL is unset).
    #[arg(
        long,
        env = "CAPLIQUIFY_DATA_DIR", help_heading = DATABASE_OPTIONS,
        default_value = ".capliquify",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Days a soft-deleted tenant can still be restored; purge is allowed after them.
    #[arg(long, env = "CAPLIQUIFY_DELETION_GRACE_DAYS", help_heading = LIFECYCLE_OPTIONS, default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub grace_days: u32,

    /// Days a tenant may stay past due (payment failed) before the lifecycle job suspends it.
    #[arg(long, env = "CAPLIQUIFY_PAST_DUE_GRACE_DAYS", help_heading = LIFECYCLE_OPTIONS, default_value_t = 7, global = true,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub past_due_grace_days: u32,

    /// Key sealing API credentials: 64 hex characters (`openssl rand -hex 32`). Required by
    /// `serve` whenever DATABASE_URL or CLERK_JWKS_URL is set; only the embedded demo
    /// (neither set) uses a public development key.
    #[arg(long, env = "ENCRYPTION_KEY", global = true, help_heading = KEYS_OPTIONS, hide_env_values = true)]
    pub encryption_key: Option<String>,

    /// Id recorded in envelopes sealed with ENCRYPTION_KEY (change it when the key changes).
    #[arg(long, env = "ENCRYPTION_KEY_ID", help_heading = KEYS_OPTIONS, default_value = "k1", global = true)]
    pub encryption_key_id: String,

    /// Older keys that may still open envelopes: `id=<64 hex>,…` (keep them until
    /// `capliquify keys rotate` has re-sealed everything).
    #[arg(long, env = "ENCRYPTION_KEYS", help_heading = KEYS_OPTIONS, global = true, hide_env_values = true)]
    pub encryption_keys: Option<String>,

    /// Key signing tenant backup archives (32+ characters, e.g. `openssl rand -hex 32`):
    /// `tenant backup` signs with it, `tenant restore` refuses archives it did not sign.
    #[arg(
        long,
        env = "CAPLIQUIFY_BACKUP_KEY",
        help_heading = BACKUP_OPTIONS,
        global = true,
        hide_env_values = true
    )]
    pub backup_key: Option<String>,

    /// PostgreSQL clusters beside the home one (DATABASE_URL or the embedded cluster), that
    /// tenants can be placed on: `name=postgres://…;name=postgres://…`.
    #[arg(
        long,
        env = "CAPLIQUIFY_CLUSTERS", help_heading = DATABASE_OPTIONS,
        global = true,
        hide_env_values = true
    )]
    pub clusters: Option<String>,

    /// Most database connections this process opens (per cluster).
    #[arg(long, env = "CAPLIQUIFY_DB_MAX_CONNECTIONS", help_heading = DATABASE_OPTIONS, default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

/// The development key of the embedded demo: public on purpose, used only when no
/// ENCRYPTION_KEY is set and the database is the embedded one.
const DEMO_ENCRYPTION_KEY: &str = "6465762d6f6e6c792d6b65792d636170";

impl Settings {
    /// CAPLIQUIFY_BACKUP_KEY, checked: unset is `None`, blank or weak is an error.
    pub fn backup_key(&self) -> anyhow::Result<Option<crate::tenancy::backup::BackupKey>> {
        self.backup_key
            .as_deref()
            .map(crate::tenancy::backup::BackupKey::parse)
            .transpose()
    }

    /// The keyring for credentials. `demo` allows the development key when none is set.
    pub fn keyring(&self, demo: bool) -> anyhow::Result<crate::crypto::Keyring> {
        let demo_key = DEMO_ENCRYPTION_KEY.repeat(2);
        let (key, id) = match (&self.encryption_key, demo) {
            (Some(key), _) => (Some(key.as_str()), self.encryption_key_id.as_str()),
            (None, true) => (Some(demo_key.as_str()), "demo"),
            (None, false) => (None, self.encryption_key_id.as_str()),
        };
        crate::crypto::Keyring::from_settings(key, id, self.encryption_keys.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// True when `secret` uses fewer than 8 distinct bytes (`aaaa…`, `0000…`, `abab…`): such a
/// value passes a length check yet is guessed at once. Random secrets of the lengths we
/// require practically never do.
pub fn is_trivial(secret: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in secret {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|s| **s).count() < 8
}

/// Checks a secret setting given as text: present means non-empty, at least `min_len`
/// printable characters without spaces, and not [`is_trivial`]. The error names `name`;
/// a blank value is an error, never "unset", so a half-written configuration fails closed.
pub fn check_secret(name: &str, value: &str, min_len: usize) -> anyhow::Result<()> {
    if value.trim().is_empty() {
        anyhow::bail!(
            "{name} is set but empty; give it a secret of at least {min_len} characters (e.g. `openssl rand -hex 32`), or unset it"
        );
    }
    if value.len() < min_len || !value.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "{name} must be at least {min_len} printable characters without spaces (e.g. `openssl rand -hex 32`)"
        );
    }
    if is_trivial(value.as_bytes()) {
        anyhow::bail!(
            "{name} is too simple (fewer than 8 different characters); use a random one (e.g. `openssl rand -hex 32`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_that_are_blank_short_or_trivial_are_refused_by_name() {
        for bad in [
            "",
            "   ",
            "short",
            &"a".repeat(40),
            &"ab".repeat(20),
            &format!("{} x", "0123456789abcdef".repeat(2)),
        ] {
            let err = check_secret("CAPLIQUIFY_ADMIN_TOKEN", bad, 32).unwrap_err();
            assert!(err.to_string().contains("CAPLIQUIFY_ADMIN_TOKEN"), "{err}");
        }
        assert!(check_secret("X", &"0123456789abcdef".repeat(2), 32).is_ok());
    }
}
