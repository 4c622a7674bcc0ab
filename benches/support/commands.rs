//! The operators' commands as real processes: the `capliquify` binary Cargo built for the
//! bench, run against the bench database and timed from start to exit (the tenancy and
//! scale benches).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use sqlx::PgPool;
use tokio::process::Command;

use super::median;

/// The commands [`time_commands`] times, as their report names them.
pub const COMMANDS: [&str; 6] = [
    "migrate (no-op)",
    "tenant list",
    "doctor",
    "monitor sizes --limit 10",
    "monitor tenants",
    "tenant backup (one tenant)",
];

/// The `capliquify` binary Cargo built for this bench (`cargo bench` builds the package's
/// binaries with the same profile), or `target/release/capliquify` as a fallback.
pub fn capliquify_binary() -> anyhow::Result<PathBuf> {
    let path = option_env!("CARGO_BIN_EXE_capliquify").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/capliquify"),
        PathBuf::from,
    );
    ensure!(
        path.is_file(),
        "{} is missing; build it with `cargo build --release` (or run through `cargo bench`)",
        path.display()
    );
    Ok(path)
}

/// Measured runs of each command. Most are 20–60 ms processes, and on two cores one run
/// in three can be 10 ms off (`doctor` at 100 tenants: 35.5–46.6 ms over three runs of
/// the ninth scale run): the median of 7 keeps one slow or fast run out of a ratio.
pub const REPS: usize = 7;

/// The commands, each run [`REPS`] times after one unmeasured run, on the database
/// `bench_url` (whose tenants `pool` reads); median milliseconds each, in [`COMMANDS`]'
/// order.
pub async fn time_commands(pool: &PgPool, bench_url: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let binary = capliquify_binary()?;
    let slug: String =
        sqlx::query_scalar("SELECT slug::text FROM public.tenants ORDER BY slug LIMIT 1")
            .fetch_one(pool)
            .await?;
    let archive = std::env::temp_dir().join(format!(
        "capliquify-bench-{}.capliquify-backup",
        std::process::id()
    ));
    let archive_arg = archive.to_string_lossy().into_owned();
    let args: [Vec<&str>; 6] = [
        vec!["migrate"],
        vec!["tenant", "list"],
        vec!["doctor"],
        vec!["monitor", "sizes", "--limit", "10"],
        vec!["monitor", "tenants"],
        vec!["tenant", "backup", &slug, "--output", &archive_arg],
    ];
    let mut out = Vec::new();
    for (name, args) in COMMANDS.iter().zip(&args) {
        let times = run_binary(bench_url, &binary, args, REPS, || {
            let _ = std::fs::remove_file(&archive);
        })
        .await?;
        let m = median(&times);
        println!("  {name}: median {m:.1} ms");
        out.push(((*name).to_owned(), m));
    }
    let _ = std::fs::remove_file(&archive);
    Ok(out)
}

/// Runs `capliquify ARGS` against the database `bench_url` once unmeasured (it loads the
/// binary into the page cache), then `reps` times; the wall time of each measured run
/// (process start, connect, work, exit), in milliseconds. `before` runs before each.
pub async fn run_binary(
    bench_url: &str,
    binary: &Path,
    args: &[&str],
    reps: usize,
    before: impl Fn(),
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(reps);
    for rep in 0..=reps {
        before();
        let started = Instant::now();
        let out = Command::new(binary)
            .args(args)
            .env("DATABASE_URL", bench_url)
            .env(
                "CAPLIQUIFY_BACKUP_KEY",
                "bench-backup-key-0123456789abcdef0123456789abcdef",
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", binary.display()))?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            out.status.success(),
            "`capliquify {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if rep > 0 {
            times.push(elapsed);
        }
    }
    Ok(times)
}
