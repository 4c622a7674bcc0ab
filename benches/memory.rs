//! Memory benchmark: the peak resident memory of the service while concurrent clients page
//! through a list of maximum-size rows stays under a documented bound (256 MiB).
//!
//! The service caps what a list can hold in memory: a scenario's `parameters` and `results`
//! are at most 64 KiB each as compact JSON ([`MAX_SCENARIO_JSON_BYTES`]), and a page ends
//! once its JSON passes 1 MiB (`MAX_PAGE_BYTES`), whatever `limit` asks. This bench checks
//! that those caps hold for the whole process, with the real binary:
//!
//! 1. Starts `capliquify serve` as its own process (the binary Cargo builds with the bench,
//!    in the same profile) in demo mode: `DATABASE_URL` unset, `CAPLIQUIFY_DATA_DIR` a
//!    temporary folder, so it runs a private PostgreSQL cluster there and prints the demo
//!    tenants' tokens. Its per-tenant concurrency gate is raised to `--clients`, so every
//!    client's request is in a handler at once (the default gate, 6, would make two of 8
//!    wait or get 429, and hold less in memory).
//! 2. Through the API, with the ACME owner token (professional plan: it has `what_if`),
//!    creates `--scenarios` scenarios in ACME's demo company, each with `parameters` and
//!    `results` of 65,535 bytes of compact JSON (monthly projection rows).
//! 3. After 2 s idle, reads the service's `VmRSS` from `/proc/<pid>/status`: the baseline.
//!    Then resets its `VmHWM` (peak RSS) through `/proc/<pid>/clear_refs`, so the peak read
//!    at the end is the load's alone; when the kernel refuses, the report says the peak
//!    includes the setup.
//! 4. For `--duration` seconds, `--clients` tokio tasks (one reqwest client each) page
//!    through `GET /api/v1/scenarios?limit=200`, following `next_cursor` and starting over
//!    after the last page, while `VmRSS` is sampled every 50 ms.
//!
//! Printed: the baseline, the peak under load (the larger of the highest sample and
//! `VmHWM`), the ratio peak/baseline, requests and their rate, bytes and rows per page, and
//! PASS or FAIL against `--bound-mb` (MiB); FAIL exits non-zero. The service is stopped
//! (SIGTERM, then wait; SIGKILL after 30 s) and its cluster too (`capliquify db stop`)
//! however the run ends, Ctrl-C included.
//!
//! Only the service process is measured: PostgreSQL's processes and this one (the clients)
//! are not.
//!
//! ```text
//! cargo bench --bench memory -- [--duration SECS] [--clients N] [--scenarios N] [--bound-mb MIB]
//! ```

// The database helpers in support are the other benches'; this one uses only its flags.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use capliquify::http::resources::scenarios::MAX_SCENARIO_JSON_BYTES;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use support::BenchArgs;

/// Size of each scenario document as compact JSON: one byte under the cap.
const DOCUMENT_BYTES: usize = MAX_SCENARIO_JSON_BYTES - 1;
/// Rows asked per page: the API's largest `limit`, so the 1 MiB cap is what ends a page.
const LIMIT: usize = 200;
/// Between the last write of the setup and the baseline reading.
const IDLE: Duration = Duration::from_secs(2);
/// Between two readings of `VmRSS` under load.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long the service may take to initialise its cluster and answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(180);
/// How long the service may take to drain after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);
const MIB: f64 = 1024.0 * 1024.0;

/// Peak resident memory of the service (a separate process, demo mode) while concurrent
/// clients page through scenarios of maximum-size JSON documents, against a bound
/// (docs/benchmarks.md).
#[derive(Debug, clap::Parser)]
#[command(name = "memory", bin_name = "cargo bench --bench memory --")]
struct Args {
    /// Seconds of list load.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    duration: u64,
    /// Concurrent clients paging through the list (and the service's per-tenant gate).
    #[arg(long, value_name = "N", default_value_t = 8)]
    clients: usize,
    /// Scenarios created, each with `parameters` and `results` of 65,535 bytes.
    #[arg(long, value_name = "N", default_value_t = 200)]
    scenarios: usize,
    /// The bound on the service's peak resident memory under load, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    bound_mb: u64,
}

impl BenchArgs for Args {
    fn check(&self) -> Result<(), String> {
        if self.duration >= 1 && self.clients >= 1 && self.scenarios >= 1 && self.bound_mb >= 1 {
            Ok(())
        } else {
            Err("--duration, --clients, --scenarios and --bound-mb must be at least 1".into())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let passed = runtime.block_on(async {
        // Started inside the runtime so the guard is dropped (and the service stopped) on
        // every way out of this block: an error, a panic unwinding, or Ctrl-C.
        let mut service = Service::start(args.clients)?;
        tokio::select! {
            outcome = run(&args, &mut service) => outcome,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    drop(runtime);
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// The service process, its data folder, and what it printed; stopped when dropped.
struct Service {
    child: Child,
    bin: PathBuf,
    base: String,
    /// Lines of the service's stdout (the demo banner), read by a thread so the pipe never
    /// fills.
    stdout: mpsc::Receiver<String>,
    /// Last: dropped after `Drop::drop` has stopped the cluster that lives in it.
    dir: tempfile::TempDir,
}

impl Service {
    fn start(clients: usize) -> anyhow::Result<Self> {
        // Cargo builds the package's binaries with its benches, in the same profile.
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_capliquify"));
        ensure!(
            bin.is_file(),
            "{} is missing: run the bench through `cargo bench --bench memory`, which builds it",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("capliquify-memory-")
            .tempdir()
            .context("creating the service's data folder")?;
        // As root, the cluster runs as `postgres`, which must be able to enter the folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let mut command = Command::new(&bin);
        // Demo mode needs no database URL and no Clerk settings; no other setting of the
        // caller's environment should change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| {
                k.starts_with("CAPLIQUIFY_") || k.starts_with("CLERK_") || k == "DATABASE_URL"
            }) {
                command.env_remove(key);
            }
        }
        let mut child = command
            .env("CAPLIQUIFY_DATA_DIR", dir.path().join("data"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--tenant-concurrency", &clients.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, stdout) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    // The receiver gone is the bench ending: keep draining the pipe.
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Self {
            child,
            bin,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The end of the service's log, for an error message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits for `/readyz` and the ACME owner token of the demo banner.
    async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<String> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut token = None;
        let mut ready = false;
        loop {
            while let Ok(line) = self.stdout.try_recv() {
                if let Some(t) = line
                    .trim()
                    .strip_prefix("export TOKEN_ACME='")
                    .and_then(|t| t.strip_suffix('\''))
                {
                    token = Some(t.to_owned());
                }
            }
            if !ready {
                ready = http
                    .get(format!("{}/readyz", self.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            }
            if let (true, Some(token)) = (ready, &token) {
                return Ok(token.clone());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the service exited ({status}) before it was ready; its log ends:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the service was not ready (ready: {ready}, ACME token seen: {}) within {} s; its log ends:\n{}",
                    token.is_some(),
                    READY_WITHIN.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("stopping the service (SIGTERM)");
            // std sends only SIGKILL, which would skip the service's own drain and cluster
            // stop; procps' kill sends SIGTERM.
            let termed = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + STOP_WITHIN;
            while termed && matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("the service did not stop: killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // The service stops its cluster on SIGTERM; this covers a service killed or dead.
        let stopped = Command::new(&self.bin)
            .env_remove("DATABASE_URL")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["db", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!(
                "`capliquify --data-dir {} db stop` failed: a PostgreSQL server may be left running there",
                self.data_dir().display()
            );
        }
    }
}

/// One reading of `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{path} has no {name}"))?;
        let kib: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{path}: {name}{line}"))?;
        Ok(kib * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// Resets the process's `VmHWM` to its current RSS (Linux ≥ 4.0, as root or the owner).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// A document of exactly `size` bytes as compact JSON, shaped as a what-if's inputs or
/// outputs are: monthly projection rows per SKU, then a note that pads it to the byte.
fn document(seed: usize, size: usize) -> anyhow::Result<Value> {
    let row = |i: usize| {
        json!({
            "month": format!("{}-{:02}", 2027 + i / 12, i % 12 + 1),
            "sku": format!("ACME-{:05}", (seed * 31 + i) % 100_000),
            "units": (seed * 7 + i * 13) % 10_000,
            "unit_price": format!("{}.{:02}", 10 + i % 90, (seed + i) % 100),
            "cash_delta": -(((seed + i * 37) % 50_000) as i64),
        })
    };
    let mut len = serde_json::to_vec(&json!({"note": "", "rows": []}))?.len();
    let mut rows = Vec::new();
    loop {
        let next = row(rows.len());
        // A comma before every row but the first.
        let grows = serde_json::to_vec(&next)?.len() + usize::from(!rows.is_empty());
        if len + grows > size {
            break;
        }
        len += grows;
        rows.push(next);
    }
    let doc = json!({"note": "x".repeat(size - len), "rows": rows});
    let actual = serde_json::to_vec(&doc)?.len();
    ensure!(actual == size, "document of {actual} bytes, {size} wanted");
    Ok(doc)
}

#[derive(Deserialize)]
struct Page {
    data: Vec<IgnoredAny>,
    next_cursor: Option<String>,
}

/// What the clients counted.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    bytes: AtomicU64,
    rows: AtomicU64,
    max_page: AtomicU64,
}

async fn run(args: &Args, service: &mut Service) -> anyhow::Result<bool> {
    let http = http_client()?;
    println!(
        "memory benchmark: peak RSS of the service, {} clients x {} s of GET /api/v1/scenarios?limit={LIMIT}",
        args.clients, args.duration
    );
    println!(
        "  service: {} serve (pid {}), demo mode, data under {}",
        service.bin.display(),
        service.pid(),
        service.dir.path().display()
    );
    let token = service.ready(&http).await?;
    let auth = format!("Bearer {token}");

    let companies: Value = http
        .get(format!("{}/api/v1/companies", service.base))
        .header("authorization", &auth)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let company = companies["data"][0]["id"]
        .as_str()
        .context("ACME's demo company: GET /api/v1/companies returned no company")?
        .to_owned();

    let started = Instant::now();
    for i in 0..args.scenarios {
        let body = json!({
            "company_id": company,
            "name": format!("memory bench {i:04}"),
            "scenario_type": "what_if",
            "parameters": document(2 * i, DOCUMENT_BYTES)?,
            "results": document(2 * i + 1, DOCUMENT_BYTES)?,
        });
        let response = http
            .post(format!("{}/api/v1/scenarios", service.base))
            .header("authorization", &auth)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            bail!(
                "POST /api/v1/scenarios answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    println!(
        "  setup: {} scenarios, parameters and results {DOCUMENT_BYTES} bytes each as compact JSON, created in {:.1} s",
        args.scenarios,
        started.elapsed().as_secs_f64()
    );

    tokio::time::sleep(IDLE).await;
    let pid = service.pid();
    let before = read_memory(pid)?;
    let reset = reset_peak(pid);
    println!(
        "  baseline after {} s idle: VmRSS {:.1} MiB (VmHWM during setup {:.1} MiB)",
        IDLE.as_secs(),
        mib(before.rss),
        mib(before.hwm)
    );

    let counts = Arc::new(Counts::default());
    // One client (and so one connection) per task, as separate callers would be; built
    // before the clock starts.
    let https = (0..args.clients)
        .map(|_| http_client())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load_started = Instant::now();
    let deadline =
        tokio::time::Instant::from_std(load_started) + Duration::from_secs(args.duration);
    let mut clients = tokio::task::JoinSet::new();
    for http in https {
        let (counts, base, auth) = (counts.clone(), service.base.clone(), auth.clone());
        clients.spawn(async move {
            let mut statuses = BTreeMap::<u16, u64>::new();
            let mut cursor: Option<String> = None;
            while tokio::time::Instant::now() < deadline {
                let mut url = url::Url::parse(&format!("{base}/api/v1/scenarios"))?;
                url.query_pairs_mut()
                    .append_pair("limit", &LIMIT.to_string());
                if let Some(c) = &cursor {
                    url.query_pairs_mut().append_pair("cursor", c);
                }
                let response = http.get(url).header("authorization", &auth).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != reqwest::StatusCode::OK {
                    *statuses.entry(status.as_u16()).or_default() += 1;
                    cursor = None;
                    continue;
                }
                let page: Page = serde_json::from_slice(&body)?;
                counts.ok.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                counts
                    .rows
                    .fetch_add(page.data.len() as u64, Ordering::Relaxed);
                counts
                    .max_page
                    .fetch_max(body.len() as u64, Ordering::Relaxed);
                cursor = page.next_cursor;
            }
            anyhow::Ok(statuses)
        });
    }
    let mut samples = 0u64;
    let mut max_rss = 0u64;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        max_rss = max_rss.max(read_memory(pid)?.rss);
        samples += 1;
    }
    // Requests under way at the deadline still finish: keep sampling until they have.
    let mut failed = BTreeMap::<u16, u64>::new();
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(result) => {
                    for (status, n) in result.context("a client panicked")?? {
                        *failed.entry(status).or_default() += n;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                max_rss = max_rss.max(read_memory(pid)?.rss);
                samples += 1;
            }
        }
    }
    let elapsed = load_started.elapsed().as_secs_f64();
    let after = read_memory(pid)?;
    let peak = max_rss.max(after.hwm);
    let ok = counts.ok.load(Ordering::Relaxed);
    let bytes = counts.bytes.load(Ordering::Relaxed);
    let rows = counts.rows.load(Ordering::Relaxed);
    ensure!(ok > 0, "no list request succeeded");

    println!(
        "  under load: highest VmRSS sample {:.1} MiB ({samples} samples every {} ms), VmHWM {:.1} MiB{}",
        mib(max_rss),
        SAMPLE_EVERY.as_millis(),
        mib(after.hwm),
        if reset {
            " (reset after the baseline)"
        } else {
            " (could not be reset: includes the setup)"
        }
    );
    println!(
        "  peak {:.1} MiB, baseline {:.1} MiB: ratio peak/baseline {:.2}; VmRSS after the load {:.1} MiB",
        mib(peak),
        mib(before.rss),
        peak as f64 / before.rss as f64,
        mib(after.rss)
    );
    println!(
        "  requests: {ok} pages in {elapsed:.1} s ({:.1}/s), {:.0} bytes per page on average (largest {}), {:.1} rows per page",
        ok as f64 / elapsed,
        bytes as f64 / ok as f64,
        counts.max_page.load(Ordering::Relaxed),
        rows as f64 / ok as f64
    );
    if !failed.is_empty() {
        let listed: Vec<String> = failed.iter().map(|(s, n)| format!("{n} x {s}")).collect();
        println!("  responses other than 200: {}", listed.join(", "));
    }
    let passed = peak <= args.bound_mb * 1024 * 1024 && failed.is_empty();
    println!(
        "  bound {} MiB: {}",
        args.bound_mb,
        match (passed, failed.is_empty()) {
            (true, _) => "PASS",
            (false, true) => "FAIL (peak above the bound)",
            (false, false) => "FAIL (some requests were not served)",
        }
    );
    Ok(passed)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?)
}
