// `tasker --version` names the commit it was built from and the WIT package it hosts.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let wit = std::fs::read_to_string("../../wit/worlds.wit")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("package ")?
                    .strip_suffix(';')
                    .map(str::to_owned)
            })
        })
        .expect("wit/worlds.wit declares its package");
    println!(
        "cargo:rustc-env=TASKER_GIT_COMMIT={commit}{}",
        if dirty { "-dirty" } else { "" }
    );
    println!("cargo:rustc-env=TASKER_WIT_PACKAGE={wit}");
    println!("cargo:rerun-if-changed=../../wit/worlds.wit");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/index");
    // A commit moves the branch HEAD names, not HEAD itself (nor always the index). Only
    // files that exist: a missing one would rerun this script on every build.
    let branch = std::fs::read_to_string("../../.git/HEAD")
        .ok()
        .and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_owned));
    for path in branch
        .map(|b| format!("../../.git/{b}"))
        .into_iter()
        .chain(["../../.git/packed-refs".to_owned()])
    {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
