//! A PostgreSQL cluster of one test that accepts only TLS connections (`hostssl` lines, no
//! `host` ones), with a certificate authority made in the test and a server certificate
//! for `localhost` only. Stopped, and its folder removed, on drop.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::unprivileged_user;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority of the test: its PEM, and its issuer to sign server certificates.
pub struct TestCa {
    pub pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A server certificate for `names` (subject alternative names) and its key, as PEM.
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "capliquify test server");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

pub struct TlsServer {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    pub port: u16,
}

impl TlsServer {
    /// Starts the cluster; its certificate names only `localhost`.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts the cluster with `extra_conf` appended to its postgresql.conf (e.g. a
    /// `shared_preload_libraries` line: the Citus tests use this server too).
    pub fn start_with(extra_conf: &str) -> Self {
        let bin = capliquify::db::embedded::find_bin_dir().expect("PostgreSQL binaries");
        let dir = std::env::temp_dir().join(format!("capliquify-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the cluster folder");
        let run_as = unprivileged_user();
        let ca = TestCa::new("CapLiquify test CA");
        let (cert, key) = ca.server_cert(&["localhost"]);
        std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write ca.pem");
        std::fs::write(dir.join("server.crt"), cert).expect("write server.crt");
        std::fs::write(dir.join("server.key"), key).expect("write server.key");
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            dir,
            bin,
            run_as,
            port,
        };
        server.chown_all();
        let data = server.dir.join("data");
        server.run("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]);
        });
        let conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             fsync = off\n\
             {extra_conf}\n",
            port = server.port,
            dir = server.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // TLS or nothing over TCP; pg_ctl itself checks readiness over the socket.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        server.chown_all();
        let log = server.dir.join("postgres.log");
        server.run("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]);
        });
        server
    }

    /// The certificate file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A folder for the test's own files (e.g. another CA).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `postgres://postgres@{host}:{port}/postgres?{query}`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn chown_all(&self) {
        let Some((uid, gid)) = self.run_as else {
            return;
        };
        let mut stack = vec![self.dir.clone()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).expect("chown");
            if path.is_dir() && !path.is_symlink() {
                for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                    stack.push(entry.path());
                }
            }
        }
    }

    fn run(&self, tool: &str, args: impl FnOnce(&mut Command)) {
        let mut cmd = Command::new(self.bin.join(tool));
        args(&mut cmd);
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open postgresql.conf");
    f.write_all(text.as_bytes()).expect("append");
}
