//! Citus mode (issue 17): detected from the connected database and shown by `doctor`.
//!
//! The tests with Citus loaded need its library: `scripts/install-citus.sh` builds it from
//! `../shared/vendor/citus-13.2.2.tar.gz` (and does nothing when it is installed). Where
//! neither the library nor the tarball is found, those tests print why and return; the
//! plain-server test always runs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::TestDb;
use crate::common::tls_server::TlsServer;
use capliquify::db::citus::{self, CitusMode};

/// The installed `citus.so`, building it with the script when the tarball is there.
fn citus_library() -> Option<&'static PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let tarball = std::env::var_os("CAPLIQUIFY_CITUS_TARBALL")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("../shared/vendor/citus-13.2.2.tar.gz"));
            if tarball.is_file() {
                let out = Command::new(root.join("scripts/install-citus.sh"))
                    .arg(&tarball)
                    .output()
                    .expect("run scripts/install-citus.sh");
                assert!(
                    out.status.success(),
                    "scripts/install-citus.sh failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return Some(PathBuf::from(
                    String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                ));
            }
            let bin = capliquify::db::embedded::find_bin_dir().ok()?;
            let lib = bin.parent()?.join("lib/citus.so");
            lib.is_file().then_some(lib)
        })
        .as_ref()
}

#[tokio::test]
async fn doctor_says_citus_is_off_on_a_plain_server() {
    let db = TestDb::new().await;
    let mode = citus::detect(&db.pool).await.unwrap();
    assert_eq!(
        mode,
        CitusMode::Off {
            reason: "the citus extension is not installed in this database".into()
        }
    );
    let check = citus::doctor_check(&db.pool).await.unwrap();
    assert_eq!(check.result, "PASS");
    assert!(check.details.starts_with("off: "), "{}", check.details);
}

#[tokio::test]
async fn citus_mode_is_detected_once_the_library_is_loaded_and_the_extension_made() {
    let Some(lib) = citus_library() else {
        eprintln!(
            "skipped: Citus is not installed and ../shared/vendor/citus-13.2.2.tar.gz is not here (scripts/install-citus.sh)"
        );
        return;
    };
    assert!(lib.is_file(), "{} is missing", lib.display());
    let server = TlsServer::start_with("shared_preload_libraries = 'citus'");
    let pool = capliquify::db::connect(&server.url("localhost", "sslmode=require"), 1)
        .await
        .expect("connect to the Citus server");

    // The library alone: the extension is not made in this database yet.
    let mode = citus::detect(&pool).await.unwrap();
    let CitusMode::Off { reason } = &mode else {
        panic!("expected off before CREATE EXTENSION, got {mode:?}");
    };
    assert!(reason.contains("CREATE EXTENSION citus"), "{reason}");

    sqlx::query("CREATE EXTENSION citus")
        .execute(&pool)
        .await
        .expect("CREATE EXTENSION citus");
    let mode = citus::detect(&pool).await.unwrap();
    let CitusMode::On {
        version,
        workers,
        schema_based_sharding,
    } = &mode
    else {
        panic!("expected on, got {mode:?}");
    };
    assert!(version.starts_with("13.2"), "{version}");
    assert_eq!(*workers, 0, "no worker registered");
    assert!(!schema_based_sharding, "off by default");

    // doctor's line warns (not a failure) that without a worker tenants stay on the
    // coordinator.
    let check = citus::doctor_check(&pool).await.unwrap();
    assert_eq!(check.result, "WARN", "{}", check.details);
    assert!(
        check
            .details
            .contains("0 of 0 tenant schema(s) distributed"),
        "{}",
        check.details
    );
    assert!(
        check.details.contains("no worker registered"),
        "{}",
        check.details
    );
}
