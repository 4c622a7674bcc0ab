//! CPU time from `/proc` (Linux): this process's (the in-process service and its load
//! generator, or the load tools it waits for) and a local PostgreSQL server's (postmaster
//! and every child), so that a bench can print what a request or a transaction costs each
//! side (the api and scale benches).

use std::path::Path;
use std::time::Duration;

use sqlx::PgPool;

/// CPU time used so far by this process (`own`) and by its waited-for children
/// (`children`: wrk, pgbench), from `/proc/self/stat` (Linux; USER_HZ is 100 on every Linux
/// ABI). Zero where unavailable.
#[derive(Clone, Copy)]
pub struct CpuTimes {
    pub own: Duration,
    pub children: Duration,
}

impl CpuTimes {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name: utime, stime, cutime, cstime are
        // fields 14 to 17.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect();
        let ticks = |i: usize| Duration::from_millis(f.get(i).copied().unwrap_or(0) * 10);
        Self {
            own: ticks(0) + ticks(1),
            children: ticks(2) + ticks(3),
        }
    }

    /// (own, children) CPU per transaction since `self`.
    pub fn per_tx(self, transactions: usize) -> (Duration, Duration) {
        let now = Self::now();
        let n = u32::try_from(transactions.max(1)).unwrap_or(u32::MAX);
        (
            now.own.saturating_sub(self.own) / n,
            now.children.saturating_sub(self.children) / n,
        )
    }
}

/// CPU time used so far by a PostgreSQL server: the postmaster's own and its waited-for
/// children's (backends that ended), plus every live child's (backends, background
/// workers), from `/proc` (Linux). The difference of two readings is the server's CPU
/// between them, whatever backends started or ended in between.
#[derive(Clone, Copy)]
pub struct ServerCpu {
    postmaster: i32,
    used: Duration,
}

impl ServerCpu {
    /// The server's postmaster, from `postmaster.pid` in its data directory; `None` when
    /// that file or its process cannot be read here (a remote server).
    pub async fn postmaster(pool: &PgPool) -> Option<i32> {
        let dir: String = sqlx::query_scalar("SHOW data_directory")
            .fetch_one(pool)
            .await
            .ok()?;
        let pid_file = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid")).ok()?;
        let pid: i32 = pid_file.lines().next()?.trim().parse().ok()?;
        proc_stat(pid).map(|_| pid)
    }

    pub fn now(postmaster: i32) -> Option<Self> {
        let (_, own, children) = proc_stat(postmaster)?;
        let mut used = own + children;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((parent, own, _)) = proc_stat(pid)
                && parent == postmaster
            {
                used += own;
            }
        }
        Some(Self { postmaster, used })
    }

    /// The server's CPU per transaction since `self`.
    pub fn per_tx(self, transactions: usize) -> Option<Duration> {
        let now = Self::now(self.postmaster)?;
        let n = u32::try_from(transactions.max(1)).unwrap_or(u32::MAX);
        Some(now.used.saturating_sub(self.used) / n)
    }
}

/// (parent pid, own CPU, waited-for children's CPU) of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, ppid (field 4), …, utime, stime,
    // cutime, cstime (fields 14 to 17); USER_HZ is 100 on every Linux ABI.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| -> Option<Duration> {
        Some(Duration::from_millis(f.get(i)?.parse::<u64>().ok()? * 10))
    };
    Some((
        f.get(1)?.parse().ok()?,
        ticks(11)? + ticks(12)?,
        ticks(13)? + ticks(14)?,
    ))
}
