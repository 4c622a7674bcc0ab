//! `capliquify config check`: every setting, where its value came from, and what is wrong.
//!
//! The settings are read from clap's own command tree (every argument with an environment
//! variable, in the global options and in each command), so the list stays right when
//! settings are added. Each command is parsed again with this process's global flags and
//! environment, and `ArgMatches::value_source` says whether a value came from a flag, the
//! environment or the default. Secrets (arguments with `hide_env_values`, or named like a
//! secret, key, password or token) are never printed: URLs lose their password, anything
//! else shows only that it is set.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _};
use serde::Serialize;

use super::{Cli, output};
use crate::config::Settings;
use crate::db::{self, tls};
use crate::http::ServeArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print every setting (flag, environment variable), its value (secrets redacted) and
    /// where it came from, then every problem found; exit 1 when one is an error.
    #[command(after_help = "\
Checks what `serve` would refuse (missing ENCRYPTION_KEY or Clerk settings outside the
embedded demo, malformed keys) and what it would run with but should not in production:
weak keys and tokens, a database reached without TLS outside this machine, a service
listening only on loopback, per-process cursor secrets. Settings of `serve` are read from
the environment (give them as flags to `serve` itself).")]
    Check,
}

/// One setting as found.
#[derive(Debug, Serialize)]
struct Setting {
    /// The command it belongs to (`global` for the options of every command).
    command: String,
    flag: String,
    env: Option<String>,
    /// The value as printed: redacted when secret, absent when unset.
    value: Option<String>,
    /// `flag`, `environment`, `default`, `unset`, or `unknown` (a command that cannot be
    /// parsed without its own arguments).
    source: &'static str,
    secret: bool,
}

#[derive(Debug, Serialize)]
struct Problem {
    level: &'static str,
    setting: &'static str,
    message: String,
}

pub fn run(cmd: ConfigCommand, settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check = cmd;
    let globals = global_argv();
    let settings_found = enumerate(&globals)?;
    let serve = serve_args(&globals)?;
    let problems = problems(settings, &serve);
    if json {
        output::json(&serde_json::json!({ "settings": settings_found, "problems": problems }))?;
    } else {
        let rows = settings_found.iter().map(|s| {
            vec![
                s.env.clone().unwrap_or_else(|| s.flag.clone()),
                s.command.clone(),
                s.value.clone().unwrap_or_else(|| "-".to_owned()),
                s.source.to_owned(),
            ]
        });
        println!(
            "{}",
            output::table(&["SETTING", "COMMAND", "VALUE", "SOURCE"], rows)
        );
        if problems.is_empty() {
            println!("no problems found");
        }
        for p in &problems {
            println!("{} {}: {}", p.level.to_uppercase(), p.setting, p.message);
        }
    }
    Ok(if problems.iter().any(|p| p.level == "error") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// This process's arguments without the `config check` words: the global flags given.
fn global_argv() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if let Some(i) = args
        .windows(2)
        .position(|w| w[0] == "config" && w[1] == "check")
    {
        args.drain(i..i + 2);
    }
    args
}

/// Every argument with an environment variable, in the globals and in every command that
/// has its own, with its value and source as a run of that command would see them.
fn enumerate(globals: &[OsString]) -> anyhow::Result<Vec<Setting>> {
    let root = Cli::command();
    let mut out = Vec::new();
    // Global options first, read from a plain `config check` parse.
    let mut argv = globals.to_vec();
    argv.extend(["config".into(), "check".into()]);
    let matches = root.clone().try_get_matches_from(&argv)?;
    for arg in root.get_arguments().filter(|a| a.get_env().is_some()) {
        out.push(setting("global", arg, Some(&matches)));
    }
    let mut stack: Vec<(Vec<String>, &clap::Command)> = root
        .get_subcommands()
        .map(|c| (vec![c.get_name().to_owned()], c))
        .collect();
    while let Some((path, cmd)) = stack.pop() {
        stack.extend(cmd.get_subcommands().map(|c| {
            let mut p = path.clone();
            p.push(c.get_name().to_owned());
            (p, c)
        }));
        let own: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_some() && !a.is_global_set())
            .filter(|a| !root.get_arguments().any(|g| g.get_id() == a.get_id()))
            .collect();
        if own.is_empty() {
            continue;
        }
        let mut argv = globals.to_vec();
        argv.extend(path.iter().map(OsString::from));
        let command = path.join(" ");
        // A command whose own required arguments are missing cannot be parsed bare: its
        // settings are listed without a value rather than failing the whole check.
        let parsed = root.clone().try_get_matches_from(&argv).ok();
        let mut sub = parsed.as_ref();
        for name in &path {
            sub = sub.and_then(|m| m.subcommand_matches(name));
        }
        for arg in own {
            out.push(setting(&command, arg, sub));
        }
    }
    out.sort_by(|a, b| {
        (a.command != "global", &a.command).cmp(&(b.command != "global", &b.command))
    });
    Ok(out)
}

/// `matches` is `None` when the command could not be parsed (source `unknown`).
fn setting(command: &str, arg: &clap::Arg, matches: Option<&clap::ArgMatches>) -> Setting {
    let id = arg.get_id().as_str();
    let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
    let flag = arg
        .get_long()
        .map(|l| format!("--{l}"))
        .unwrap_or_else(|| id.to_owned());
    let secret = arg.is_hide_env_values_set() || looks_secret(env.as_deref().unwrap_or(id));
    let Some(matches) = matches else {
        return Setting {
            command: command.to_owned(),
            flag,
            env,
            value: None,
            source: "unknown",
            secret,
        };
    };
    let source = match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        Some(ValueSource::DefaultValue) => "default",
        _ => "unset",
    };
    let raw = matches.get_raw(id).map(|values| {
        values
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",")
    });
    let value = raw.map(|v| match v {
        v if secret => redact(&v),
        v if v.is_empty() => "(empty)".to_owned(),
        v => v,
    });
    Setting {
        command: command.to_owned(),
        flag,
        env,
        value,
        source,
        secret,
    }
}

/// Named like a secret: …SECRET, …KEY(S), …PASSWORD, …TOKEN — but not the id naming a key
/// (ENCRYPTION_KEY_ID), which is printed in envelopes anyway.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.ends_with("_id") || name.ends_with("-id") {
        return false;
    }
    ["secret", "key", "password", "token"]
        .iter()
        .any(|w| name.contains(w))
}

/// A secret as printed: PostgreSQL URLs without their password, anything else only its
/// length.
fn redact(value: &str) -> String {
    if value.is_empty() {
        return "(empty)".to_owned();
    }
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        return db::redact(value);
    }
    if value.contains("=postgres") {
        // CAPLIQUIFY_CLUSTERS: name=url;name=url
        return value
            .split(';')
            .map(|entry| match entry.split_once('=') {
                Some((name, url)) => format!("{name}={}", db::redact(url.trim())),
                None => "***".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(";");
    }
    format!("(set, {} characters, redacted)", value.chars().count())
}

/// The settings `serve` would run with (its arguments read from the environment).
fn serve_args(globals: &[OsString]) -> anyhow::Result<ServeArgs> {
    let mut argv = globals.to_vec();
    argv.push("serve".into());
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let sub = matches
        .subcommand_matches("serve")
        .ok_or_else(|| anyhow::anyhow!("no matches for serve"))?;
    Ok(ServeArgs::from_arg_matches(sub)?)
}

fn problems(settings: &Settings, serve: &ServeArgs) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut error = |setting: &'static str, message: String| {
        out.push(Problem {
            level: "error",
            setting,
            message,
        });
    };
    // As `serve` decides: the embedded demo runs without Clerk and with a development key.
    let production = settings.database_url.is_some() || serve.clerk_jwks_url.is_some();

    match (&settings.encryption_key, production) {
        (None, true) => error(
            "ENCRYPTION_KEY",
            "missing: serve refuses to start without it outside the embedded demo (`openssl rand -hex 32`)".into(),
        ),
        (Some(key), _) => {
            if let Err(e) = settings.keyring(false) {
                error("ENCRYPTION_KEY", format!("{e:#}"));
            } else if key.eq_ignore_ascii_case(&DEMO_KEY_HALF.repeat(2)) {
                error(
                    "ENCRYPTION_KEY",
                    "is the embedded demo's public development key; make a new one with `openssl rand -hex 32`".into(),
                );
            } else if weak_hex(key) {
                error(
                    "ENCRYPTION_KEY",
                    "weak: too few distinct digits for 32 random bytes; make a new one with `openssl rand -hex 32`".into(),
                );
            }
        }
        (None, false) => {}
    }
    if production && (serve.clerk_jwks_url.is_none() || serve.clerk_issuer.is_none()) {
        error(
            "CLERK_JWKS_URL",
            "CLERK_JWKS_URL and CLERK_ISSUER must both be set outside the embedded demo".into(),
        );
    }
    if let Some(token) = &serve.admin_token
        && token.chars().count() < crate::http::admin::MIN_TOKEN_LEN
    {
        error(
            "CAPLIQUIFY_ADMIN_TOKEN",
            format!(
                "weak: at least {} characters (`openssl rand -hex 32`)",
                crate::http::admin::MIN_TOKEN_LEN
            ),
        );
    }
    if serve.console.as_deref() == Some("on") && production && serve.admin_token.is_none() {
        error(
            "CAPLIQUIFY_CONSOLE",
            "on, but CAPLIQUIFY_ADMIN_TOKEN is unset: operators sign in to the console with it, and serve refuses to start without it".into(),
        );
    }
    if let Some(secret) = &serve.cursor_secret
        && secret.chars().count() < 32
    {
        error(
            "CAPLIQUIFY_CURSOR_SECRET",
            "weak: at least 32 characters (`openssl rand -hex 32`)".into(),
        );
    }
    let mut urls: Vec<(&'static str, String, String)> = Vec::new();
    if let Some(url) = &settings.database_url {
        urls.push(("DATABASE_URL", "DATABASE_URL".into(), url.clone()));
    }
    match db::cluster::parse_config(settings.clusters.as_deref().unwrap_or("")) {
        Ok(_) => {
            for entry in settings.clusters.as_deref().unwrap_or("").split(';') {
                if let Some((name, url)) = entry.split_once('=') {
                    urls.push((
                        "CAPLIQUIFY_CLUSTERS",
                        format!("cluster {}", name.trim()),
                        url.trim().to_owned(),
                    ));
                }
            }
        }
        Err(e) => error("CAPLIQUIFY_CLUSTERS", e.to_string()),
    }
    let mut warnings = Vec::new();
    for (setting, what, url) in urls {
        match tls::connect_options(&url) {
            Err(e) => error(setting, e.to_string()),
            Ok(options) => {
                let (encrypted, local) = tls::transport(&options);
                let mode = tls::mode_name(options.get_ssl_mode());
                if !local && !encrypted {
                    let message = format!(
                        "{what} reaches {} with sslmode={mode}: {}; set sslmode=verify-full (or require)",
                        options.get_host(),
                        if matches!(mode, "prefer") {
                            "it falls back to an unencrypted connection when the server offers no TLS"
                        } else {
                            "not encrypted"
                        }
                    );
                    if mode == "prefer" {
                        warnings.push((setting, message));
                    } else {
                        error(setting, message);
                    }
                }
            }
        }
    }
    if production {
        if serve.listen.ip().is_loopback() {
            warnings.push((
                "CAPLIQUIFY_LISTEN",
                format!(
                    "{} accepts connections only from this machine; in a container or behind a proxy on another host use 0.0.0.0:<port>",
                    serve.listen
                ),
            ));
        }
        if serve.cursor_secret.is_none() {
            warnings.push((
                "CAPLIQUIFY_CURSOR_SECRET",
                "unset: each process signs cursors with its own random secret, so a page's cursor fails on another instance or after a restart".into(),
            ));
        }
        if serve.clerk_webhook_signing_secret.is_none() {
            warnings.push((
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "unset: /webhooks/clerk answers 503".into(),
            ));
        }
        if serve.stripe_webhook_secret.is_none() {
            warnings.push((
                "STRIPE_WEBHOOK_SECRET",
                "unset: /webhooks/stripe answers 503".into(),
            ));
        }
    }
    let concurrency = serve.tenant_concurrency;
    if concurrency != 0 && concurrency >= settings.db_max_connections as usize {
        warnings.push((
            "CAPLIQUIFY_TENANT_CONCURRENCY",
            format!(
                "{concurrency} is not below CAPLIQUIFY_DB_MAX_CONNECTIONS ({}): one tenant can take every connection",
                settings.db_max_connections
            ),
        ));
    }
    out.extend(warnings.into_iter().map(|(setting, message)| Problem {
        level: "warning",
        setting,
        message,
    }));
    out
}

/// Half of the embedded demo's public development key (`config.rs`), which must never seal
/// production credentials.
const DEMO_KEY_HALF: &str = "6465762d6f6e6c792d6b65792d636170";

/// A 64-hex-digit key with fewer than 8 distinct digits is not random (32 random bytes
/// show 16 distinct digits with near certainty).
fn weak_hex(key: &str) -> bool {
    let mut seen = [false; 128];
    for b in key.bytes() {
        seen[usize::from(b.to_ascii_lowercase() & 0x7f)] = true;
    }
    seen.iter().filter(|s| **s).count() < 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("abc"), "(set, 3 characters, redacted)");
        assert!(!redact("postgres://u:hunter2@h/db").contains("hunter2"));
        let clusters = redact("eu=postgres://u:hunter2@h/db;us=postgres://v:pw9@k/db");
        assert!(
            !clusters.contains("hunter2") && !clusters.contains("pw9"),
            "{clusters}"
        );
        assert!(looks_secret("STRIPE_WEBHOOK_SECRET") && looks_secret("CAPLIQUIFY_ADMIN_TOKEN"));
        assert!(!looks_secret("CAPLIQUIFY_LISTEN") && !looks_secret("ENCRYPTION_KEY_ID"));
    }

    #[test]
    fn weak_keys_are_found() {
        assert!(weak_hex(&"ab".repeat(32)));
        assert!(!weak_hex(
            "3f9a1c7e5b2d8046f1e3a5c7b9d0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f6"
        ));
    }
}
