//! pgbench as a same-run baseline (the api and scale benches): one run with per-transaction
//! logs, read back so that a bench can choose its own window (after a warm-up that pgbench
//! itself cannot express) and its own percentiles.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use capliquify::http::columns::RowType as _;
use capliquify::http::resource::Resource as _;
use capliquify::http::resources::products::{Product, Products};
use tokio::process::Command;

use super::BenchServer;

/// One logged transaction; `start` and `end` are times since the Unix epoch.
#[derive(Clone, Copy)]
pub struct Tx {
    pub client: u32,
    /// The client's transaction number, from 0.
    pub number: u64,
    pub start: Duration,
    pub end: Duration,
}

impl Tx {
    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// What one pgbench run logged.
pub struct Logged {
    pub transactions: Vec<Tx>,
    /// Log lines that did not parse as a completed transaction.
    pub unparsed: usize,
    /// pgbench's own `tps = …` figure, as printed.
    pub own_tps: String,
    /// When the process was started (since the Unix epoch).
    pub launched: Duration,
}

impl Logged {
    /// When the first transaction started: pgbench's clock starts then (connections are
    /// made before).
    pub fn first_start(&self) -> Duration {
        self.transactions
            .iter()
            .map(|t| t.start)
            .min()
            .unwrap_or_default()
    }
}

/// The products list handler's SELECT for the default sort (`name`), its `LIMIT` `limit`
/// (a number, or `$1`): what `GET /api/v1/products` runs in its scoped transaction.
pub fn products_page_sql(limit: &str) -> String {
    format!(
        "SELECT {}, (name)::text AS cursor_key FROM {} WHERE true ORDER BY name ASC, id ASC LIMIT {limit}",
        Product::select_list(),
        Products::TABLE
    )
}

/// A pgbench command on `server`'s tools, without the `PG*` variables that could redirect
/// its connection from the URL [`run_logged`] gives it.
pub fn command(server: &BenchServer) -> Command {
    let mut command = Command::new(server.tool("pgbench"));
    for var in [
        "PGOPTIONS",
        "PGSERVICE",
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs `command` (from [`command`], with its load options) against `url` with
/// per-transaction logs in `dir` (created empty, removed afterwards) and reads them back.
pub async fn run_logged(mut command: Command, url: &str, dir: &Path) -> anyhow::Result<Logged> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    command
        .arg("-l")
        .arg(format!("--log-prefix={}", dir.join("txlog").display()))
        .arg(url)
        .stdin(Stdio::null());
    let launched = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let output = command.output().await.context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let own_tps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    // One log file per pgbench thread, a line per transaction: "client transaction
    // latency_us script epoch_s epoch_us"; the epoch columns are the completion time.
    let mut transactions = Vec::new();
    let mut unparsed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("txlog"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (|| {
                let client: u32 = f.first()?.parse().ok()?;
                let number: u64 = f.get(1)?.parse().ok()?;
                let latency_us: u64 = f.get(2)?.parse().ok()?;
                let secs: u64 = f.get(4)?.parse().ok()?;
                let micros: u64 = f.get(5)?.parse().ok()?;
                let end = Duration::from_micros(secs * 1_000_000 + micros);
                Some(Tx {
                    client,
                    number,
                    start: end.saturating_sub(Duration::from_micros(latency_us)),
                    end,
                })
            })();
            match parsed {
                Some(t) => transactions.push(t),
                None => unparsed += 1,
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    ensure!(!transactions.is_empty(), "pgbench logged no transaction");
    Ok(Logged {
        transactions,
        unparsed,
        own_tps,
        launched,
    })
}
