//! `tlab --version [--verbose]`: the binary's provenance as build.rs compiled it in — commit and dirty flag of the
//! checkout it was built from, compiler, target, profile and the protocol and TLS library versions. Manifests take
//! their commit from here, so a suite run from any directory records the commit of the binary that ran it.

use std::collections::BTreeMap;

use tlab_results::BuildInfo;

/// What this binary was built from.
pub fn build_info() -> BuildInfo {
    let known = |value: &str| (value != "unknown").then(|| value.to_string());
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: known(env!("TLAB_GIT_COMMIT")),
        git_dirty: known(env!("TLAB_GIT_DIRTY")).map(|d| d == "true"),
        rustc: env!("TLAB_RUSTC").to_string(),
        target: env!("TLAB_TARGET").to_string(),
        profile: env!("TLAB_PROFILE").to_string(),
        libraries: env!("TLAB_LIBRARIES")
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .fold(BTreeMap::new(), |mut libraries: BTreeMap<String, String>, (name, version)| {
                libraries.entry(name.to_string()).and_modify(|v| *v = format!("{v}, {version}")).or_insert_with(|| version.to_string());
                libraries
            }),
    }
}

/// The version line, and with `verbose` one line per build fact.
pub fn text(verbose: bool) -> String {
    let build = build_info();
    let commit = build.git_commit.as_deref().unwrap_or("unknown");
    let dirty = match build.git_dirty {
        Some(true) => " (dirty)",
        _ => "",
    };
    let mut text = format!("tlab {} ({commit}{dirty})\n", build.version);
    if verbose {
        text += &format!("rustc: {}\ntarget: {}\nprofile: {}\n", build.rustc, build.target, build.profile);
        for (name, version) in &build.libraries {
            text += &format!("{name}: {version}\n");
        }
    }
    text
}
