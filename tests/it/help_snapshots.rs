//! Every command's `--help`, compared with the committed text under tests/it/snapshots/help/,
//! so a change to what operators read is a reviewed diff. After an intended change, rewrite
//! them with `UPDATE_SNAPSHOTS=1 cargo test --test it help_snapshots::` and review `git diff`.
//!
//! Why not a snapshot crate: the whole need is "run, compare with a file, rewrite on
//! request" — a dozen lines here, against a dependency and its review tool.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every command's path below `capliquify`, walked from the real command tree (so a new
/// command cannot be missed), the top level first.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            walk(sub, sub_path, out);
        }
    }
    let mut out = Vec::new();
    walk(&capliquify::cli::command(), Vec::new(), &mut out);
    out
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots/help")
}

fn snapshot_file(path: &[String]) -> PathBuf {
    let name = if path.is_empty() {
        "capliquify".to_owned()
    } else {
        format!("capliquify-{}", path.join("-"))
    };
    snapshot_dir().join(format!("{name}.txt"))
}

/// `capliquify <path> --help` as an operator sees it: a clean environment (the help shows
/// the values of environment settings) and a fixed width.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(path)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .expect("run capliquify");
    assert!(out.status.success(), "{path:?} --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

#[test]
fn every_commands_help_matches_its_snapshot() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let paths = command_paths();
    assert!(paths.len() > 30, "the walk found the command tree");
    let mut differ = Vec::new();
    let mut expected_files = Vec::new();
    for path in &paths {
        let file = snapshot_file(path);
        let text = help(path);
        expected_files.push(file.clone());
        if update {
            std::fs::create_dir_all(snapshot_dir()).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(committed) if committed == text => {}
            Ok(committed) => differ.push(format!(
                "{}: differs\n--- committed\n{committed}\n+++ now\n{text}",
                file.display()
            )),
            Err(_) => differ.push(format!("{}: missing", file.display())),
        }
    }
    // A snapshot of a command that no longer exists is stale.
    for entry in std::fs::read_dir(snapshot_dir()).unwrap() {
        let file = entry.unwrap().path();
        if !expected_files.contains(&file) {
            if update {
                std::fs::remove_file(&file).unwrap();
            } else {
                differ.push(format!("{}: no such command any more", file.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "help texts changed; if intended, run UPDATE_SNAPSHOTS=1 cargo test --test it help_snapshots:: and review the diff:\n\n{}",
        differ.join("\n\n")
    );
}

#[test]
fn settings_show_only_where_they_are_read_and_under_their_heading() {
    let openapi = help(&["openapi".into()]);
    assert!(
        !openapi.contains("--database-url") && !openapi.contains("--encryption-key"),
        "{openapi}"
    );
    let stop = help(&["db".into(), "stop".into()]);
    assert!(
        stop.contains("Database options:") && !stop.contains("--encryption-key"),
        "{stop}"
    );
    let create = help(&["tenant".into(), "create".into()]);
    let own = create.find("--clerk-org").unwrap();
    let heading = create.find("Database options:").unwrap();
    assert!(
        own < heading,
        "tenant create's own flags come first:\n{create}"
    );
    assert!(!create.contains("--grace-days"), "{create}");
    let rotate = help(&["keys".into(), "rotate".into()]);
    assert!(
        rotate.contains("Credential key options:") && rotate.contains("--encryption-keys"),
        "{rotate}"
    );
    let purge = help(&["tenant".into(), "purge".into()]);
    assert!(
        purge.contains("Tenant lifecycle options:") && purge.contains("--grace-days"),
        "{purge}"
    );
}
