//! TLS to PostgreSQL: `sslmode` and `sslrootcert` of a connection URL, read as libpq reads
//! them, turned into sqlx's connection options.
//!
//! sqlx already parses `sslmode` (and `PGSSLMODE`, `PGSSLROOTCERT`); this module adds the
//! libpq rules sqlx lacks, so a URL copied from a provider's dashboard means the same here
//! as in `psql`:
//! - `sslrootcert=system` (libpq 16): the system's roots; `sslmode` then defaults to
//!   `verify-full` and a weaker mode is refused.
//! - `sslmode=require` with a root certificate named: verified as `verify-ca`.
//!
//! The TLS stack is rustls with the system's root certificates (sqlx's
//! `tls-rustls-ring-native-roots`; `SSL_CERT_FILE`/`SSL_CERT_DIR` override where they are
//! read). Differences from libpq, documented in docs/deploy.md: a named `sslrootcert` is
//! trusted in addition to the system roots (libpq trusts only it), `sslmode=allow` never
//! tries TLS, and client certificates come from the URL or `PGSSLCERT`/`PGSSLKEY` only.

use std::borrow::Cow;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Why a URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingError {
    #[error("{0} is not a valid PostgreSQL URL (postgres://user@host:port/db): {1}")]
    Invalid(String, String),
    #[error(
        "{0}: sslmode={1} may not be used with sslrootcert=system (the system's roots are only useful when the host name is checked); use sslmode=verify-full"
    )]
    WeakSystemRoots(String, String),
}

/// Names aws-lc-rs as the process's rustls provider, once. sqlx's handshake names its own
/// (ring), but its certificate verifiers for verify-ca and `require` with a root ask rustls
/// for the process default, which rustls cannot choose while both are compiled in (it
/// panics). Every connection's options pass here first.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The connection options of `url` with libpq's TLS rules applied. Messages name the URL
/// without its password.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, TlsSettingError> {
    install_crypto_provider();
    let redacted = super::redact(url);
    let (url, system_roots, explicit_mode) = strip_system_roots(url);
    let mut options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| TlsSettingError::Invalid(redacted.clone(), e.to_string()))?;
    let env_mode = std::env::var("PGSSLMODE").ok().filter(|m| !m.is_empty());
    if system_roots {
        match explicit_mode.or(env_mode) {
            None => options = options.ssl_mode(PgSslMode::VerifyFull),
            Some(mode) if mode == "verify-full" => {}
            Some(mode) => return Err(TlsSettingError::WeakSystemRoots(redacted, mode)),
        }
    } else if matches!(options.get_ssl_mode(), PgSslMode::Require) && names_root_cert(&url) {
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    Ok(options.application_name("capliquify"))
}

/// The URL without `sslrootcert=system`, whether it was there, and the URL's own `sslmode`.
fn strip_system_roots(url: &str) -> (Cow<'_, str>, bool, Option<String>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (Cow::Borrowed(url), false, None);
    };
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let mode = pairs
        .iter()
        .find(|(k, _)| k == "sslmode" || k == "ssl-mode")
        .map(|(_, v)| v.clone());
    let is_system = |(k, v): &(String, String)| {
        matches!(k.as_str(), "sslrootcert" | "ssl-root-cert" | "ssl-ca") && v == "system"
    };
    if !pairs.iter().any(is_system) {
        let env_system = std::env::var("PGSSLROOTCERT").is_ok_and(|v| v == "system");
        return (Cow::Borrowed(url), env_system, mode);
    }
    let kept: Vec<_> = pairs.iter().filter(|p| !is_system(p)).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    (Cow::Owned(parsed.to_string()), true, mode)
}

/// Whether the URL (or `PGSSLROOTCERT`) names a root certificate file.
fn names_root_cert(url: &str) -> bool {
    let in_url = url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs().any(|(k, v)| {
            matches!(&*k, "sslrootcert" | "ssl-root-cert" | "ssl-ca") && !v.is_empty()
        })
    });
    in_url || std::env::var("PGSSLROOTCERT").is_ok_and(|v| !v.is_empty() && v != "system")
}

/// The `sslmode` name of a mode, as libpq spells it.
pub fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Whether a connection with `options` is encrypted for sure (require or stronger), and
/// whether its host is this machine (loopback or a Unix socket), where TLS adds nothing.
pub fn transport(options: &PgConnectOptions) -> (bool, bool) {
    let encrypted = matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (encrypted, local)
}

/// A hint for a failed connection, when the cause is a TLS setting.
pub fn hint(options: &PgConnectOptions, error: &sqlx::Error) -> Option<String> {
    let mode = options.get_ssl_mode();
    if is_tls_failure(error) {
        return Some(if matches!(mode, PgSslMode::VerifyFull) {
            format!(
                "sslmode=verify-full checks that the server's certificate is signed by a trusted root and names the host {:?}; connect by the name in the certificate, or name its root with sslrootcert=/path/root.crt",
                options.get_host()
            )
        } else {
            format!(
                "the TLS handshake failed with sslmode={}; check that sslrootcert names the root that signed the server's certificate",
                mode_name(mode)
            )
        });
    }
    match error {
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some("28000") && db.message().contains("no encryption") =>
        {
            Some(
                "the server accepts only TLS connections: set sslmode=require (or verify-full) in the URL"
                    .to_owned(),
            )
        }
        _ => None,
    }
}

/// sqlx reports a refused certificate as an I/O error around rustls's own error (the
/// handshake runs inside its socket I/O), and other TLS setup failures as `Error::Tls`.
fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_with_a_root_certificate_verifies_the_ca() {
        let o = connect_options("postgres://u@db.example/x?sslmode=require&sslrootcert=/r.crt")
            .expect("parses");
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyCa));
        let o = connect_options("postgres://u@db.example/x?sslmode=require").expect("parses");
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Require));
    }

    #[test]
    fn system_roots_mean_verify_full() {
        let o = connect_options("postgres://u@db.example/x?sslrootcert=system").expect("parses");
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        let err =
            connect_options("postgres://u:pw@db.example/x?sslrootcert=system&sslmode=require")
                .expect_err("weak mode refused");
        let msg = err.to_string();
        assert!(msg.contains("verify-full") && !msg.contains("pw"), "{msg}");
    }

    #[test]
    fn loopback_and_sockets_are_local() {
        for (url, local) in [
            ("postgres://u@localhost/x", true),
            ("postgres://u@127.0.0.1/x", true),
            ("postgres://u@[::1]/x", true),
            ("postgres://u@db.example/x", false),
            ("postgres://u@10.0.0.5/x", false),
        ] {
            let o = connect_options(url).expect("parses");
            assert_eq!(transport(&o).1, local, "{url}");
        }
    }
}
