//! Compiles the binary's provenance into it (read by `src/version.rs`): the git commit and dirty flag of the
//! checkout it is built from ("unknown" outside one), the compiler, target and profile, and the versions of the
//! protocol and TLS libraries from the workspace's Cargo.lock. Reruns when HEAD, the branch it points to, the index
//! or Cargo.lock change.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries whose versions a result depends on most.
const LIBRARIES: [&str; 6] = ["quinn", "h3", "wtransport", "tonic", "tokio-tungstenite", "rustls"];

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.join("../..");
    let lock = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(&workspace).arg("--no-optional-locks").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit.as_ref().and_then(|_| git(&["status", "--porcelain"])).map(|s| (!s.is_empty()).to_string());
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        for file in ["HEAD", "index", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", git_dir.join(file).display());
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let unknown = || "unknown".to_string();
    println!("cargo:rustc-env=TLAB_GIT_COMMIT={}", commit.unwrap_or_else(unknown));
    println!("cargo:rustc-env=TLAB_GIT_DIRTY={}", dirty.unwrap_or_else(unknown));
    println!("cargo:rustc-env=TLAB_RUSTC={}", rustc_version.filter(|v| !v.is_empty()).unwrap_or_else(unknown));
    println!("cargo:rustc-env=TLAB_TARGET={}", std::env::var("TARGET").unwrap_or_else(|_| unknown()));
    println!("cargo:rustc-env=TLAB_PROFILE={}", std::env::var("PROFILE").unwrap_or_else(|_| unknown()));
    println!("cargo:rustc-env=TLAB_LIBRARIES={}", libraries(&lock));
}

/// `name=version` for each of [`LIBRARIES`] in Cargo.lock, `;`-separated (several versions of one: each listed).
fn libraries(lock: &Path) -> String {
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut found = Vec::new();
    for package in text.split("[[package]]") {
        let field = |key: &str| {
            package.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_prefix("= ")?.trim().strip_prefix('"')?.strip_suffix('"').map(str::to_string))
        };
        if let (Some(name), Some(version)) = (field("name"), field("version"))
            && LIBRARIES.contains(&name.as_str())
        {
            found.push(format!("{name}={version}"));
        }
    }
    for name in LIBRARIES {
        if !found.iter().any(|f| f.split('=').next() == Some(name)) {
            found.push(format!("{name}=unknown"));
        }
    }
    found.join(";")
}
