//! A private PostgreSQL cluster run from the installed server binaries.
//!
//! When `DATABASE_URL` is unset, capliquify (service, CLI and tests alike)
//! needs a database without asking a newcomer to set one up: this module
//! finds `initdb`/`pg_ctl`/`postgres`, initialises a cluster under a root
//! folder (the product default is `./.capliquify`), starts it — or reuses the
//! one already running for that folder — and makes sure the requested
//! database exists.
//!
//! It listens on no TCP port at all: only on a Unix socket in `sock/`, a
//! folder only the server's OS user (and root) may enter, and every login
//! needs its password (SCRAM-SHA-256). The superuser's password is generated
//! at the first start and kept in `superuser.password` (mode 0600), so
//! another account on a shared machine can neither reach the socket nor
//! guess its way in (`--auth=trust` on TCP made any local user a superuser).
//!
//! Layout under the root folder:
//! - `pg/` — the data directory (with our settings in `pg/capliquify.conf`
//!   and our `pg/pg_hba.conf`, both rewritten at every start),
//! - `sock/` — the server's Unix socket (mode 0700),
//! - `superuser.password` — the `postgres` role's password (mode 0600),
//! - `postgres.log` — the server log,
//! - `embedded.lock` — a file lock serialising init/start/stop between
//!   processes (several test binaries may start at once).
//!
//! PostgreSQL refuses to run as root, so when this process is root the
//! server tools run as the `postgres` system user (or `nobody`).
//!
//! Everything here blocks; async callers should use
//! `tokio::task::spawn_blocking`. Dropping an [`EmbeddedCluster`] does not
//! stop the server, because other processes may be sharing it; call
//! [`EmbeddedCluster::stop`] explicitly.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming a directory that holds the server binaries.
pub const PG_BIN_ENV: &str = "CAPLIQUIFY_PG_BIN";

const CONF_FILE: &str = "capliquify.conf";
const SOCKET_DIR: &str = "sock";
const PASSWORD_FILE: &str = "superuser.password";
/// Only names the socket file (`.s.PGSQL.5432`): there is no TCP listener, and the socket
/// folder is the cluster's own, so no other server can take it.
const DEFAULT_PORT: u16 = 5432;
/// `sun_path` holds 108 bytes with its NUL; PostgreSQL refuses longer socket paths.
const MAX_SOCKET_PATH: usize = 107;
const HBA: &str = "# Managed by capliquify: rewritten at every start, so edits here are lost.\n\
                   # The Unix socket only (listen_addresses is empty), every role by password.\n\
                   local all all scram-sha-256\n";
const INCLUDE_LINE: &str = "include_if_exists = 'capliquify.conf'";
const REQUIRED_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
const VERSIONED_BIN_ROOT: &str = "/usr/lib/postgresql";
const LOG_TAIL_LINES: usize = 20;
const START_ATTEMPTS: usize = 3;
/// How long to wait for a server that is "running" but not yet (or no
/// longer) accepting connections.
const REUSE_WAIT: Duration = Duration::from_secs(30);

/// Variables that would otherwise silently redirect our child processes to
/// another server, database or user.
const PG_ENV_VARS: [&str; 10] = [
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
];

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Folder holding the data directory, log and lock file.
    pub root: PathBuf,
    /// `false` turns off fsync and friends: much faster, but a machine crash
    /// may corrupt the cluster. Meant for tests.
    pub durable: bool,
    /// Database to create if missing; [`EmbeddedCluster::url`] points at it.
    pub database: String,
}

/// A running private cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    /// The `postgres` role's password (from `superuser.password`).
    password: String,
    started_here: bool,
    run_as: Option<RunAs>,
    database: String,
}

/// Failures, each phrased so the reader knows what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. Searched:\n  {}\n\
         Install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`, \
         Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`), \
         or set {PG_BIN_ENV} to the directory holding them, or set DATABASE_URL to use an existing server",
        searched.join("\n  ")
    )]
    NoBinaries { searched: Vec<String> },

    #[error(
        "{PG_BIN_ENV}={} lacks {missing}; point it at the directory holding initdb, pg_ctl and postgres \
         (e.g. /usr/lib/postgresql/15/bin), or unset it to search automatically",
        dir.display()
    )]
    BadPgBin { dir: PathBuf, missing: String },

    #[error(
        "running as root, so PostgreSQL has to run as the unprivileged user `{user}`, but `{user}` \
         cannot enter {}; set CAPLIQUIFY_DATA_DIR to a folder under /tmp or /var/tmp \
         (e.g. /var/tmp/capliquify), or run as a normal user",
        dir.display()
    )]
    NotTraversable { dir: PathBuf, user: String },

    #[error(
        "running as root, but PostgreSQL refuses to run as root and neither a `postgres` nor a `nobody` \
         user exists in /etc/passwd; create one (e.g. `useradd --system postgres`) or run as a normal user"
    )]
    NoUnprivilegedUser,

    #[error(
        "{} exists but is not a PostgreSQL data directory (no PG_VERSION); move it away or delete it, \
         or set CAPLIQUIFY_DATA_DIR to another folder",
        data_dir.display()
    )]
    NotADataDir { data_dir: PathBuf },

    #[error(
        "initdb failed for {}; the half-made data directory was removed, so fix the cause and run again:\n{stderr}",
        data_dir.display()
    )]
    Initdb { data_dir: PathBuf, stderr: String },

    #[error(
        "PostgreSQL did not start (data directory {}, log {}): {reason}\nLast lines of the log:\n{log_tail}",
        data_dir.display(),
        log.display()
    )]
    Start {
        data_dir: PathBuf,
        log: PathBuf,
        reason: String,
        log_tail: String,
    },

    #[error(
        "could not stop PostgreSQL (data directory {}): {stderr}\n\
         If it hangs, `pg_ctl stop -m immediate -D {}` (as the server's user) forces it down",
        data_dir.display(),
        data_dir.display()
    )]
    Stop { data_dir: PathBuf, stderr: String },

    #[error(
        "could not query PostgreSQL's status (data directory {}): {stderr}",
        data_dir.display()
    )]
    Status { data_dir: PathBuf, stderr: String },

    #[error(
        "psql was not found in {} nor on PATH, and it is needed to create database `{database}`; \
         install the PostgreSQL client (Debian/Ubuntu: `apt-get install postgresql-client`)",
        bin_dir.display()
    )]
    NoPsql { bin_dir: PathBuf, database: String },

    #[error("could not create database `{database}` (socket port {port}): {stderr}")]
    CreateDatabase {
        database: String,
        port: u16,
        stderr: String,
    },

    #[error(
        "the embedded cluster's socket path {} is {len} bytes, longer than a Unix socket allows \
         ({MAX_SOCKET_PATH}); set CAPLIQUIFY_DATA_DIR to a shorter folder (e.g. /var/tmp/capliquify)",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },

    #[error(
        "could not set the superuser's password of the embedded cluster (data directory {}): {stderr}",
        data_dir.display()
    )]
    Password { data_dir: PathBuf, stderr: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl EmbeddedError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
        let context = context.into();
        move |source| EmbeddedError::Io { context, source }
    }
}

impl EmbeddedCluster {
    /// Initialises the cluster if needed, starts it unless already running,
    /// and creates `opts.database` if missing.
    pub fn start(opts: &EmbeddedOptions) -> Result<EmbeddedCluster, EmbeddedError> {
        let ctx = Context::open(&opts.root, true)?;
        let _lock = ctx.lock()?;
        ctx.check_socket_path()?;
        ctx.ensure_initialised(opts.durable)?;
        let password = ctx.ensure_password()?;
        ctx.secure_access()?;
        let (port, started_here) = ctx.start_or_reuse(opts.durable)?;
        ctx.ensure_database(port, &opts.database, &password)?;
        Ok(EmbeddedCluster {
            bin_dir: ctx.bin_dir,
            root: ctx.root,
            port,
            password,
            started_here,
            run_as: ctx.run_as,
            database: opts.database.clone(),
        })
    }

    /// URL of the requested database, as the superuser (with its password).
    pub fn url(&self) -> String {
        self.url_as("postgres", &self.database)
    }

    /// URL of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        self.url_as("postgres", "postgres")
    }

    /// URL of `database` as `user`, with the cluster's generated password: the login roles
    /// capliquify creates on its embedded cluster (the service's) are given the same one.
    pub fn url_as(&self, user: &str, database: &str) -> String {
        database_url(
            &self.socket_dir(),
            self.port,
            user,
            &self.password,
            database,
        )
    }

    /// The superuser's generated password (`superuser.password`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The folder of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join(SOCKET_DIR)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `false` when the server was already running (started by another
    /// process or an earlier run); such a caller should usually not stop it.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    /// Stops the server (fast shutdown: open sessions are disconnected).
    /// Stopping a server that is not running is not an error.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        let ctx = Context {
            bin_dir: self.bin_dir.clone(),
            root: self.root.clone(),
            run_as: self.run_as.clone(),
        };
        let _lock = ctx.lock()?;
        ctx.stop_server().map(|_| ())
    }

    /// Stops the cluster under `root` without holding an [`EmbeddedCluster`]
    /// (e.g. from an operators' command). Returns whether it was running.
    pub fn stop_at(root: &Path) -> Result<bool, EmbeddedError> {
        if !root.join("pg").join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let ctx = Context::open(root, false)?;
        let _lock = ctx.lock()?;
        ctx.stop_server()
    }

    /// `Some(port)` when the cluster under `root` is running; never starts it.
    pub fn status(root: &Path) -> Result<Option<u16>, EmbeddedError> {
        if !root.join("pg").join("PG_VERSION").is_file() {
            return Ok(None);
        }
        Context::open(root, false)?.running_port()
    }
}

/// The unprivileged account the server tools run as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// Everything needed to drive the server tools for one root folder.
struct Context {
    bin_dir: PathBuf,
    /// Absolute, because the tools run with the root folder as cwd.
    root: PathBuf,
    run_as: Option<RunAs>,
}

impl Context {
    fn open(root: &Path, create: bool) -> Result<Context, EmbeddedError> {
        if create {
            fs::create_dir_all(root).map_err(EmbeddedError::io(format!(
                "could not create {}",
                root.display()
            )))?;
        }
        let root = fs::canonicalize(root).map_err(EmbeddedError::io(format!(
            "could not resolve {}",
            root.display()
        )))?;
        let bin_dir = find_bin_dir()?;
        let run_as = if effective_uid()? == 0 {
            let user = unprivileged_user()?;
            check_traversable(&root, &user)?;
            if create {
                give_dir_to(&root, &user)?;
            }
            Some(user)
        } else {
            None
        };
        Ok(Context {
            bin_dir,
            root,
            run_as,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("pg.init")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn conf_file(&self) -> PathBuf {
        self.data_dir().join(CONF_FILE)
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join(SOCKET_DIR)
    }

    fn socket_path(&self, port: u16) -> PathBuf {
        self.socket_dir().join(format!(".s.PGSQL.{port}"))
    }

    fn password_file(&self) -> PathBuf {
        self.root.join(PASSWORD_FILE)
    }

    fn check_socket_path(&self) -> Result<(), EmbeddedError> {
        // The longest port number, so a later port cannot push it over.
        let path = self.socket_path(65535);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EmbeddedError::SocketPathTooLong { path, len });
        }
        Ok(())
    }

    /// The socket folder (0700, the server's user's) and our pg_hba.conf, every start:
    /// a folder or file loosened by hand is tightened again.
    fn secure_access(&self) -> Result<(), EmbeddedError> {
        let dir = self.socket_dir();
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(EmbeddedError::Io {
                    context: format!("could not create {}", dir.display()),
                    source: e,
                });
            }
            _ => {}
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(EmbeddedError::io(
            format!("could not chmod {}", dir.display()),
        ))?;
        if let Some(user) = &self.run_as {
            chown_to(&dir, user)?;
        }
        let hba = self.data_dir().join("pg_hba.conf");
        if fs::read_to_string(&hba).is_ok_and(|current| current == HBA) {
            return Ok(());
        }
        fs::write(&hba, HBA).map_err(EmbeddedError::io(format!(
            "could not write {}",
            hba.display()
        )))?;
        if let Some(user) = &self.run_as {
            chown_to(&hba, user)?;
        }
        Ok(())
    }

    /// The superuser's password: read from `superuser.password`, or — on a new cluster, or
    /// one made before passwords (trust authentication) — generated, set on the stopped
    /// server in single-user mode, and only then written (mode 0600).
    fn ensure_password(&self) -> Result<String, EmbeddedError> {
        let file = self.password_file();
        if let Ok(current) = fs::read_to_string(&file) {
            let current = current.trim().to_owned();
            if !current.is_empty() {
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).map_err(
                    EmbeddedError::io(format!("could not chmod {}", file.display())),
                )?;
                return Ok(current);
            }
        }
        // A server of the trust era may be running: it must not go on trusting.
        self.stop_server()?;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| EmbeddedError::Io {
            context: "could not generate the superuser's password".into(),
            source: io::Error::other("the system random generator failed"),
        })?;
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Only the verifier reaches the server (no plaintext in its memory or logs).
        let verifier = crate::db::roles::scram_sha_256_verifier(
            &password,
            &crate::db::roles::random_salt(),
            crate::db::roles::SCRAM_ITERATIONS,
        );
        let data = self.data_dir();
        let mut child = self
            .pg_command("postgres")
            .args(["--single", "-D"])
            .arg(&data)
            .arg("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(EmbeddedError::io("could not run postgres --single"))?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(
                stdin,
                "ALTER ROLE postgres PASSWORD {};",
                quote_literal(&verifier)
            )
            .map_err(EmbeddedError::io("could not write to postgres --single"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(EmbeddedError::io("could not run postgres --single"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() || text.contains("ERROR") || text.contains("FATAL") {
            return Err(EmbeddedError::Password {
                data_dir: data,
                stderr: text.trim().to_owned(),
            });
        }
        let _ = fs::remove_file(&file);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(EmbeddedError::io(format!(
                "could not create {}",
                file.display()
            )))?;
        writeln!(out, "{password}").map_err(EmbeddedError::io(format!(
            "could not write {}",
            file.display()
        )))?;
        tracing::info!(file = %file.display(), "set the embedded cluster's superuser password");
        Ok(password)
    }

    /// Held for the whole init/start/stop sequence; released on drop.
    fn lock(&self) -> Result<File, EmbeddedError> {
        let path = self.root.join("embedded.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(EmbeddedError::io(format!(
                "could not open {}",
                path.display()
            )))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for another process to finish starting or stopping PostgreSQL");
                file.lock().map_err(EmbeddedError::io(format!(
                    "could not lock {}",
                    path.display()
                )))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(EmbeddedError::Io {
                    context: format!("could not lock {}", path.display()),
                    source: e,
                });
            }
        }
        Ok(file)
    }

    /// A server tool with our user, cwd and a clean PG environment.
    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        // Our cwd may not be readable by the unprivileged user, and pg_ctl
        // resolves paths relative to it.
        cmd.current_dir(&self.root).stdin(Stdio::null());
        for var in PG_ENV_VARS {
            cmd.env_remove(var);
        }
        if let Some(user) = &self.run_as {
            // std drops supplementary groups when switching away from root.
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn ensure_initialised(&self, durable: bool) -> Result<(), EmbeddedError> {
        let data = self.data_dir();
        if data.join("PG_VERSION").is_file() {
            if let Some(user) = &self.run_as {
                give_tree_to(&data, user)?;
            }
            return Ok(());
        }
        if data.exists() {
            // An empty folder (e.g. made by hand) is harmless; anything else
            // might be someone's data, so we refuse to delete it.
            let empty = fs::read_dir(&data)
                .map_err(EmbeddedError::io(format!(
                    "could not read {}",
                    data.display()
                )))?
                .next()
                .is_none();
            if !empty {
                return Err(EmbeddedError::NotADataDir { data_dir: data });
            }
            fs::remove_dir(&data).map_err(EmbeddedError::io(format!(
                "could not remove {}",
                data.display()
            )))?;
        }

        // initdb runs into a staging folder renamed into place only when
        // complete, so a crash at any point leaves no half-made `pg/` behind.
        let staging = self.staging_dir();
        remove_dir_if_exists(&staging)?;
        // No server runs on the staging folder: before the first start our pg_hba.conf
        // (password only) replaces initdb's, and the superuser gets its password.
        let output = run(self.pg_command("initdb").arg("-D").arg(&staging).args([
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C",
        ]))?;
        if !output.status.success() {
            // Cleanup failure must not hide initdb's own message.
            let _ = remove_dir_if_exists(&staging);
            return Err(EmbeddedError::Initdb {
                data_dir: data,
                stderr: output_text(&output),
            });
        }
        let finish = || -> Result<(), EmbeddedError> {
            let main_conf = staging.join("postgresql.conf");
            let mut file =
                OpenOptions::new()
                    .append(true)
                    .open(&main_conf)
                    .map_err(EmbeddedError::io(format!(
                        "could not open {}",
                        main_conf.display()
                    )))?;
            writeln!(file, "\n{INCLUDE_LINE}").map_err(EmbeddedError::io(format!(
                "could not write {}",
                main_conf.display()
            )))?;
            self.write_conf(&staging.join(CONF_FILE), DEFAULT_PORT, durable)?;
            fs::rename(&staging, &data).map_err(EmbeddedError::io(format!(
                "could not rename {} to {}",
                staging.display(),
                data.display()
            )))?;
            fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).map_err(
                EmbeddedError::io(format!("could not chmod {}", data.display())),
            )
        };
        if let Err(e) = finish() {
            let _ = remove_dir_if_exists(&staging);
            return Err(e);
        }
        tracing::info!(data_dir = %data.display(), "initialised PostgreSQL cluster at {}", data.display());
        Ok(())
    }

    /// Writes our settings file only when its content changes, owned by the
    /// server's user.
    fn write_conf(&self, path: &Path, port: u16, durable: bool) -> Result<(), EmbeddedError> {
        let wanted = render_conf(
            port,
            &self.socket_dir(),
            durable,
            self.has_pg_stat_statements(),
        );
        if fs::read_to_string(path).is_ok_and(|current| current == wanted) {
            return Ok(());
        }
        fs::write(path, &wanted).map_err(EmbeddedError::io(format!(
            "could not write {}",
            path.display()
        )))?;
        if let Some(user) = &self.run_as {
            chown_to(path, user)?;
        }
        Ok(())
    }

    /// True when the installed PostgreSQL has the pg_stat_statements module (contrib):
    /// beside the binaries (Debian's layout) or where `pg_config` says.
    fn has_pg_stat_statements(&self) -> bool {
        const MODULE: &str = "pg_stat_statements.so";
        if let Some(lib) = self.bin_dir.parent().map(|p| p.join("lib").join(MODULE))
            && lib.is_file()
        {
            return true;
        }
        Command::new(self.bin_dir.join("pg_config"))
            .arg("--pkglibdir")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .is_some_and(|out| {
                Path::new(String::from_utf8_lossy(&out.stdout).trim())
                    .join(MODULE)
                    .is_file()
            })
    }

    fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
        let data = self.data_dir();
        let output = run(self.pg_command("pg_ctl").arg("status").arg("-D").arg(&data))?;
        match output.status.code() {
            Some(0) => {
                let from_pid = fs::read_to_string(data.join("postmaster.pid"))
                    .ok()
                    .and_then(|pid| parse_pid_file_port(&pid));
                let port = from_pid.or_else(|| {
                    fs::read_to_string(self.conf_file())
                        .ok()
                        .and_then(|conf| parse_conf_port(&conf))
                });
                match port {
                    Some(port) => Ok(Some(port)),
                    None => Err(EmbeddedError::Status {
                        data_dir: data,
                        stderr: "server is running but neither postmaster.pid nor capliquify.conf gives its port".into(),
                    }),
                }
            }
            // 3: not running; 4: no accessible data directory.
            Some(3) | Some(4) => Ok(None),
            _ => Err(EmbeddedError::Status {
                data_dir: data,
                stderr: output_text(&output),
            }),
        }
    }

    /// A server that pg_ctl reports as running may still not accept
    /// connections: it may be recovering, shutting down, or be a killed
    /// postmaster that is not yet reaped (which also blocks a new start).
    /// All of these resolve within seconds, so we wait for either outcome.
    fn start_or_reuse(&self, durable: bool) -> Result<(u16, bool), EmbeddedError> {
        let deadline = Instant::now() + REUSE_WAIT;
        loop {
            match self.running_port()? {
                None => return Ok((self.start_server(durable)?, true)),
                Some(port) if accepts_connections(&self.socket_path(port)) => {
                    tracing::info!(port, data_dir = %self.data_dir().display(), "reusing PostgreSQL on port {port}");
                    return Ok((port, false));
                }
                Some(port) if Instant::now() >= deadline => {
                    return Err(EmbeddedError::Start {
                        data_dir: self.data_dir(),
                        log: self.log_file(),
                        reason: format!(
                            "postmaster.pid says a server is running on port {port}, but it has not \
                             accepted connections for {}s; if no postgres process for this data \
                             directory exists, delete its postmaster.pid and run again",
                            REUSE_WAIT.as_secs()
                        ),
                        log_tail: read_log_tail(&self.log_file(), 0),
                    });
                }
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn start_server(&self, durable: bool) -> Result<u16, EmbeddedError> {
        let data = self.data_dir();
        let log = self.log_file();
        let configured = fs::read_to_string(self.conf_file())
            .ok()
            .and_then(|conf| parse_conf_port(&conf));
        let mut last_error = None;
        let port = configured.unwrap_or(DEFAULT_PORT);
        raise_open_files_limit();
        for attempt in 0..START_ATTEMPTS {
            self.write_conf(&self.conf_file(), port, durable)?;
            let log_offset = self.prepare_log(&log)?;
            let output = run(self
                .pg_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log))?;
            if output.status.success() {
                tracing::info!(port, data_dir = %data.display(), "started PostgreSQL on port {port}");
                return Ok(port);
            }
            let log_tail = read_log_tail(&log, log_offset);
            // A stale socket lock, or the children of a killed postmaster
            // still hold the old shared memory: both clear up.
            let transient = [
                "could not bind",
                "Address already in use",
                "pre-existing shared memory block",
            ]
            .iter()
            .any(|needle| log_tail.contains(needle));
            last_error = Some(EmbeddedError::Start {
                data_dir: data.clone(),
                log: log.clone(),
                reason: output_text(&output),
                log_tail,
            });
            if !transient {
                break;
            }
            tracing::warn!(port, attempt, "PostgreSQL failed to start, retrying");
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(last_error.unwrap_or_else(|| EmbeddedError::Start {
            data_dir: data,
            log,
            reason: "no start attempted".into(),
            log_tail: String::new(),
        }))
    }

    /// Makes sure the server's user can append to the log; returns its
    /// current length so a failure shows only this attempt's lines.
    fn prepare_log(&self, log: &Path) -> Result<u64, EmbeddedError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(EmbeddedError::io(format!(
                "could not open {}",
                log.display()
            )))?;
        if let Some(user) = &self.run_as {
            chown_to(log, user)?;
        }
        let len = file
            .metadata()
            .map_err(EmbeddedError::io(format!(
                "could not stat {}",
                log.display()
            )))?
            .len();
        Ok(len)
    }

    fn stop_server(&self) -> Result<bool, EmbeddedError> {
        if self.running_port()?.is_none() {
            return Ok(false);
        }
        let data = self.data_dir();
        let output = run(self
            .pg_command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&data))?;
        if !output.status.success() {
            return Err(EmbeddedError::Stop {
                data_dir: data,
                stderr: output_text(&output),
            });
        }
        tracing::info!(data_dir = %data.display(), "stopped PostgreSQL");
        Ok(true)
    }

    fn ensure_database(
        &self,
        port: u16,
        database: &str,
        password: &str,
    ) -> Result<(), EmbeddedError> {
        if database == "postgres" {
            return Ok(());
        }
        let fail = |stderr: String| EmbeddedError::CreateDatabase {
            database: database.to_string(),
            port,
            stderr,
        };
        if database.is_empty() {
            return Err(fail("the database name is empty".into()));
        }
        let psql = self.psql().ok_or_else(|| EmbeddedError::NoPsql {
            bin_dir: self.bin_dir.clone(),
            database: database.to_string(),
        })?;
        let run_sql = |sql: &str| {
            let mut cmd = Command::new(&psql);
            for var in PG_ENV_VARS {
                cmd.env_remove(var);
            }
            // -X: a user's ~/.psqlrc must not change the output we parse.
            // PGPASSWORD reaches only this child (not its command line, which `ps` shows).
            cmd.stdin(Stdio::null())
                .env("PGCONNECT_TIMEOUT", "10")
                .env("PGPASSWORD", password)
                .args(["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.socket_dir())
                .arg("-p")
                .arg(port.to_string())
                .args(["-U", "postgres", "-d", "postgres", "-tAc", sql]);
            run(&mut cmd)
        };
        let exists = run_sql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(database)
        ))?;
        if !exists.status.success() {
            return Err(fail(output_text(&exists)));
        }
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let created = run_sql(&format!("CREATE DATABASE {}", quote_ident(database)))?;
        if created.status.success() {
            tracing::info!(database, port, "created database {database}");
            return Ok(());
        }
        let stderr = output_text(&created);
        // Another process created it between our check and our CREATE.
        if stderr.contains("already exists") || stderr.contains("pg_database_datname_index") {
            return Ok(());
        }
        Err(fail(stderr))
    }

    fn psql(&self) -> Option<PathBuf> {
        let local = self.bin_dir.join("psql");
        if is_executable(&local) {
            return Some(local);
        }
        which_in("psql", std::env::var_os("PATH").as_deref())
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    find_bin_dir_in(
        std::env::var_os(PG_BIN_ENV).as_deref(),
        std::env::var_os("PATH").as_deref(),
        Path::new(VERSIONED_BIN_ROOT),
    )
}

fn find_bin_dir_in(
    explicit: Option<&OsStr>,
    path_var: Option<&OsStr>,
    versioned_root: &Path,
) -> Result<PathBuf, EmbeddedError> {
    let mut searched = Vec::new();

    // An explicit setting that is wrong is an error rather than a hint:
    // silently using other binaries would surprise whoever set it.
    match explicit.filter(|dir| !dir.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            return match missing_binaries(&dir) {
                None => Ok(fs::canonicalize(&dir).unwrap_or(dir)),
                Some(missing) => Err(EmbeddedError::BadPgBin { dir, missing }),
            };
        }
        None => searched.push(format!("${PG_BIN_ENV}: not set")),
    }

    match (which_in("initdb", path_var), which_in("pg_ctl", path_var)) {
        (Some(initdb), Some(_)) => {
            // Debian-style symlinks (/usr/local/bin/initdb -> …/15/bin/initdb)
            // point to the real bin dir, where `postgres` also lives.
            let real = fs::canonicalize(&initdb).unwrap_or_else(|_| initdb.clone());
            match real.parent() {
                Some(dir) => match missing_binaries(dir) {
                    None => return Ok(dir.to_path_buf()),
                    Some(missing) => searched.push(format!(
                        "PATH: found {} (-> {}), but {} lacks {missing}",
                        initdb.display(),
                        real.display(),
                        dir.display()
                    )),
                },
                None => searched.push(format!("PATH: {} has no parent", real.display())),
            }
        }
        _ => searched.push("PATH: no initdb and pg_ctl".into()),
    }

    match which_in("pg_config", path_var) {
        Some(pg_config) => match Command::new(&pg_config).arg("--bindir").output() {
            Ok(out) if out.status.success() => {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                match missing_binaries(&dir) {
                    None => return Ok(fs::canonicalize(&dir).unwrap_or(dir)),
                    Some(missing) => searched.push(format!(
                        "pg_config --bindir: {} lacks {missing}",
                        dir.display()
                    )),
                }
            }
            Ok(out) => searched.push(format!("pg_config --bindir: failed: {}", output_text(&out))),
            Err(e) => searched.push(format!("pg_config --bindir: could not run: {e}")),
        },
        None => searched.push("pg_config: not on PATH".into()),
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name().to_string_lossy())?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    if versions.is_empty() {
        searched.push(format!("{}/*/bin: none", versioned_root.display()));
    }
    for (_, dir) in versions {
        match missing_binaries(&dir) {
            None => return Ok(dir),
            Some(missing) => searched.push(format!("{}: lacks {missing}", dir.display())),
        }
    }

    Err(EmbeddedError::NoBinaries { searched })
}

/// `None` when all required binaries are present, else their names.
fn missing_binaries(dir: &Path) -> Option<String> {
    let missing: Vec<&str> = REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|name| !is_executable(&dir.join(name)))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn which_in(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn render_conf(port: u16, socket_dir: &Path, durable: bool, stat_statements: bool) -> String {
    let mut conf = format!(
        "# Managed by capliquify: rewritten at every start, so edits here are lost.\n\
         # No TCP: only the Unix socket in a folder of the server's user (mode 0700).\n\
         listen_addresses = ''\n\
         port = {port}\n\
         unix_socket_directories = {}\n\
         unix_socket_permissions = 0700\n\
         password_encryption = 'scram-sha-256'\n\
         max_connections = 200\n\
         # Schema-per-tenant migrations touch many relations in one transaction.\n\
         max_locks_per_transaction = 256\n\
         # Files a backend keeps open (default 1000): one serving hundreds of tenants'\n\
         # schemas would close and reopen relation files on most requests below this\n\
         # (docs/operations.md, \"Connection recycling\").\n\
         max_files_per_process = {MAX_FILES_PER_PROCESS}\n",
        quote_literal(&socket_dir.to_string_lossy())
    );
    if stat_statements {
        // `capliquify monitor slow-queries`: per-tenant statement statistics.
        conf.push_str(
            "shared_preload_libraries = 'pg_stat_statements'\n\
             pg_stat_statements.max = 10000\n\
             # Each tenant's `SET LOCAL search_path`/`ROLE` would be an entry of its own.\n\
             pg_stat_statements.track_utility = off\n",
        );
    }
    if !durable {
        conf.push_str(
            "# Throwaway cluster: speed over crash safety.\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
        );
    }
    conf
}

/// `max_files_per_process` of the embedded server.
const MAX_FILES_PER_PROCESS: u64 = 4000;

/// Raises this process's soft limit on open files, within its hard limit, to what the
/// server needs for [`MAX_FILES_PER_PROCESS`] (plus PostgreSQL's reserve and its
/// sockets), before starting it: the server inherits the limit and keeps fewer files open
/// per backend when it is lower (many systems' soft limit is 1024). Best effort: a server
/// that inherits less still runs, with the file churn the setting avoids.
fn raise_open_files_limit() {
    let wanted = MAX_FILES_PER_PROCESS + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(soft) if soft < wanted => tracing::warn!(
            soft,
            wanted,
            "the open-files limit is below what the embedded server's max_files_per_process needs; \
             raise the hard limit (ulimit -Hn) for fewer file reopens at fleet scale"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

fn parse_conf_port(conf: &str) -> Option<u16> {
    conf.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("port")?.trim_start();
        let value = rest.strip_prefix('=')?;
        value
            .split('#')
            .next()?
            .trim()
            .trim_matches('\'')
            .parse()
            .ok()
    })
}

/// postmaster.pid: pid, data dir, start time, port, socket dir, …
fn parse_pid_file_port(pid_file: &str) -> Option<u16> {
    pid_file.lines().nth(3)?.trim().parse().ok()
}

fn accepts_connections(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `postgres://<user>:<password>@localhost:<port>/<database>?host=<socket folder>`: the
/// form both sqlx and libpq (psql, pg_dump) read as "the Unix socket in that folder".
fn database_url(
    socket_dir: &Path,
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> String {
    let enc = |s: &str| -> String {
        // form encoding writes spaces as '+'; a URL wants %20.
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "postgres://{}:{}@localhost:{port}/{}?host={}",
        enc(user),
        enc(password),
        enc(database),
        enc(&socket_dir.to_string_lossy())
    )
}

fn run(cmd: &mut Command) -> Result<Output, EmbeddedError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output()
        .map_err(EmbeddedError::io(format!("could not run {program}")))
}

fn output_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        stderr
    };
    let text = text.trim();
    if text.is_empty() {
        format!("exited with {}", output.status)
    } else {
        text.to_string()
    }
}

/// Last lines written since `offset` (the whole log's tail if it shrank or
/// nothing new was written, e.g. pg_ctl failed before the server logged).
fn read_log_tail(log: &Path, offset: u64) -> String {
    let read_from = |offset: u64| -> io::Result<String> {
        let mut file = File::open(log)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = match read_from(offset) {
        Ok(text) if !text.trim().is_empty() => text,
        _ => read_from(0).unwrap_or_else(|e| format!("(could not read {}: {e})", log.display())),
    };
    last_lines(&text, LOG_TAIL_LINES)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), EmbeddedError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(EmbeddedError::Io {
            context: format!("could not remove {}", dir.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The owner of /proc/self is our effective uid; `id -u` covers systems
/// without procfs. Avoids a libc dependency for one syscall.
fn effective_uid() -> Result<u32, EmbeddedError> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let output = Command::new("id")
        .arg("-u")
        .output()
        .map_err(EmbeddedError::io(
            "could not determine the effective user (id -u)",
        ))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| EmbeddedError::Io {
            context: "could not determine the effective user".into(),
            source: io::Error::other(format!("`id -u` printed {:?}", output_text(&output))),
        })
}

fn unprivileged_user() -> Result<RunAs, EmbeddedError> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(EmbeddedError::io("could not read /etc/passwd"))?;
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| parse_passwd(&passwd, name))
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

fn parse_passwd(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.trim().parse().ok()?;
        let gid = fields.next()?.trim().parse().ok()?;
        Some(RunAs {
            name: name.to_string(),
            uid,
            gid,
        })
    })
}

/// Groups listing `user` as a supplementary member.
fn parse_group_memberships(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let members = fields.get(3)?;
            members
                .split(',')
                .any(|member| member.trim() == user)
                .then(|| fields.get(2)?.trim().parse().ok())?
        })
        .collect()
}

/// Mode-bit check only (ACLs are rare on the paths involved); the root
/// folder itself is excluded because we hand it over to the user.
fn check_traversable(root: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    let mut groups = vec![user.gid];
    if let Ok(group) = fs::read_to_string("/etc/group") {
        groups.extend(parse_group_memberships(&group, &user.name));
    }
    for dir in root.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(EmbeddedError::io(format!(
            "could not stat {}",
            dir.display()
        )))?;
        if !can_search(meta.uid(), meta.gid(), meta.mode(), user.uid, &groups) {
            return Err(EmbeddedError::NotTraversable {
                dir: dir.to_path_buf(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}

fn can_search(owner: u32, group: u32, mode: u32, uid: u32, gids: &[u32]) -> bool {
    if owner == uid {
        mode & 0o100 != 0
    } else if gids.contains(&group) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

fn chown_to(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(EmbeddedError::io(
        format!("could not chown {} to {}", path.display(), user.name),
    ))
}

fn give_dir_to(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    chown_to(dir, user)?;
    let meta = fs::metadata(dir).map_err(EmbeddedError::io(format!(
        "could not stat {}",
        dir.display()
    )))?;
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700)).map_err(
            EmbeddedError::io(format!("could not chmod {}", dir.display())),
        )?;
    }
    Ok(())
}

/// PostgreSQL refuses a data directory owned by anyone else, which happens
/// when the run-as user changed (e.g. `postgres` was created later).
fn give_tree_to(data: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    let meta = fs::symlink_metadata(data).map_err(EmbeddedError::io(format!(
        "could not stat {}",
        data.display()
    )))?;
    if meta.uid() == user.uid && meta.gid() == user.gid {
        return Ok(());
    }
    tracing::info!(data_dir = %data.display(), user = %user.name, "handing the data directory to {}", user.name);
    chown_tree(data, user)
}

fn chown_tree(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    let meta = fs::symlink_metadata(path).map_err(EmbeddedError::io(format!(
        "could not stat {}",
        path.display()
    )))?;
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(EmbeddedError::io(
        format!("could not chown {} to {}", path.display(), user.name),
    ))?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(EmbeddedError::io(format!(
            "could not read {}",
            path.display()
        )))?;
        for entry in entries {
            let entry = entry.map_err(EmbeddedError::io(format!(
                "could not read {}",
                path.display()
            )))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";

    #[test]
    fn passwd_lookup_finds_uid_and_gid() {
        assert_eq!(
            parse_passwd(PASSWD, "postgres"),
            Some(RunAs {
                name: "postgres".into(),
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(parse_passwd(PASSWD, "nobody").map(|u| u.uid), Some(65534));
        assert_eq!(parse_passwd(PASSWD, "post"), None);
        assert_eq!(
            parse_passwd("postgres:x:abc:1::/:/bin/sh", "postgres"),
            None
        );
    }

    #[test]
    fn group_memberships_match_whole_names() {
        let group = "ssl-cert:x:103:postgres\npostgres:x:104:\nstaff:x:50:alice,postgres2\n";
        assert_eq!(parse_group_memberships(group, "postgres"), vec![103]);
        assert!(parse_group_memberships(group, "bob").is_empty());
    }

    #[test]
    fn search_permission_uses_the_matching_class() {
        assert!(can_search(101, 0, 0o700, 101, &[104]));
        assert!(!can_search(0, 0, 0o700, 101, &[104]));
        assert!(can_search(0, 104, 0o710, 101, &[104]));
        assert!(can_search(0, 0, 0o755, 101, &[104]));
        // Owner class decides even when "other" would allow it.
        assert!(!can_search(101, 0, 0o601, 101, &[104]));
    }

    #[test]
    fn conf_round_trips_the_port() {
        let durable = render_conf(54321, Path::new("/r/sock"), true, false);
        assert_eq!(parse_conf_port(&durable), Some(54321));
        assert!(durable.contains("listen_addresses = ''"), "{durable}");
        assert!(durable.contains("unix_socket_directories = '/r/sock'"));
        assert!(durable.contains("unix_socket_permissions = 0700"));
        assert!(durable.contains("max_connections = 200"));
        assert!(durable.contains("max_locks_per_transaction = 256"));
        assert!(!durable.contains("fsync"));
        let fast = render_conf(1234, Path::new("/r/sock"), false, true);
        assert!(fast.contains("fsync = off"));
        assert!(fast.contains("synchronous_commit = off"));
        assert!(fast.contains("full_page_writes = off"));
        assert_eq!(parse_conf_port("port=5433 # comment\n"), Some(5433));
        assert_eq!(parse_conf_port("portal = 1\n"), None);
    }

    #[test]
    fn pid_file_port_is_the_fourth_line() {
        let pid = "1234\n/tmp/x/pg\n1700000000\n45678\n\n127.0.0.1\n  0  1\nready   \n";
        assert_eq!(parse_pid_file_port(pid), Some(45678));
        assert_eq!(parse_pid_file_port("1234\n"), None);
    }

    #[test]
    fn versions_sort_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("15beta"), None);
        assert!(parse_version("9.6") < parse_version("15"));
    }

    #[test]
    fn quoting_and_urls() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            database_url(
                Path::new("/r/sock"),
                1,
                "postgres",
                "pw",
                "capliquify_test-1"
            ),
            "postgres://postgres:pw@localhost:1/capliquify_test-1?host=%2Fr%2Fsock"
        );
        assert_eq!(
            database_url(Path::new("/r/s"), 1, "postgres", "pw", "a b/é"),
            "postgres://postgres:pw@localhost:1/a%20b%2F%C3%A9?host=%2Fr%2Fs"
        );
        let cluster = EmbeddedCluster {
            bin_dir: PathBuf::from("/bin"),
            root: PathBuf::from("/r"),
            port: 5555,
            password: "pw".into(),
            started_here: true,
            run_as: None,
            database: "capliquify".into(),
        };
        assert_eq!(
            cluster.url(),
            "postgres://postgres:pw@localhost:5555/capliquify?host=%2Fr%2Fsock"
        );
        assert_eq!(
            cluster.admin_url(),
            "postgres://postgres:pw@localhost:5555/postgres?host=%2Fr%2Fsock"
        );
        let options: sqlx::postgres::PgConnectOptions = cluster.url().parse().unwrap();
        assert_eq!(options.get_socket(), Some(&PathBuf::from("/r/sock")));
        assert_eq!(options.get_port(), 5555);
        assert_eq!(cluster.data_dir(), PathBuf::from("/r/pg"));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(&text, 3);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }

    #[test]
    fn bin_dir_is_found_on_this_machine() {
        let dir = find_bin_dir().expect("PostgreSQL server binaries should be installed");
        assert!(dir.is_dir());
        assert!(is_executable(&dir.join("initdb")));
        assert!(is_executable(&dir.join("pg_ctl")));
        assert!(is_executable(&dir.join("postgres")));
    }

    #[test]
    fn nothing_found_lists_every_place_searched() {
        let empty = std::env::temp_dir().join("capliquify-embedded-no-such-dir");
        let err = find_bin_dir_in(None, Some(OsStr::new("")), &empty)
            .expect_err("nothing should be found");
        let EmbeddedError::NoBinaries { searched } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(searched.len(), 4, "{searched:?}");
        let message = err.to_string();
        assert!(message.contains(PG_BIN_ENV));
        assert!(message.contains("apt-get install postgresql"));
    }

    #[test]
    fn a_wrong_explicit_bin_dir_is_an_error() {
        let err = find_bin_dir_in(Some(OsStr::new("/")), None, Path::new("/nonexistent"))
            .expect_err("/ has no initdb");
        assert!(matches!(err, EmbeddedError::BadPgBin { .. }), "{err}");
    }
}
