//! What a killed `tlab netem run` can leave behind, and how `tlab netem cleanup` finds and ends it.
//!
//! Every run writes a record — its PID and start time, the inode numbers of its two namespaces, its children's PIDs
//! and a marker — to `$TLAB_RUN_DIR/netem-PID.json` (default `/run/tlab`), and removes it when it ends normally. The
//! run's direct children die with it (see `NetNs::spawn`), but what they started in turn (a shell's background job,
//! a daemon) outlives it and keeps its namespace alive. Every child gets the marker in its environment
//! (`TLAB_NETEM_RUN=PID-STARTTIME`), which its descendants inherit, so cleanup finds them by that marker — never by
//! name, and never by namespace inode alone (the kernel reuses the inode of a freed namespace for the next new one,
//! which may belong to somebody else's run). A record whose owner still runs is left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable carrying a run's marker to its children and their descendants.
pub const MARKER_VAR: &str = "TLAB_NETEM_RUN";

/// Where run records live: `$TLAB_RUN_DIR`, else `/run/tlab`.
fn state_dir() -> PathBuf {
    std::env::var_os("TLAB_RUN_DIR").map_or_else(|| PathBuf::from("/run/tlab"), PathBuf::from)
}

/// One `tlab netem run`, as written to its record file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    /// PID of the `tlab netem run` process.
    owner: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22): tells it from a later process that
    /// reuses the PID.
    owner_start: u64,
    /// The value of [`MARKER_VAR`] in the environment of its children.
    marker: String,
    /// Inode numbers of the client and server namespaces.
    namespaces: Vec<u64>,
    /// PIDs of the children it started.
    children: Vec<u32>,
}

/// The record of the running `tlab netem run`; removed from disk when dropped (a SIGKILL skips that — the point).
pub struct RunRecord {
    record: Record,
    path: PathBuf,
}

impl RunRecord {
    /// Writes the record of this process with the given namespace inode numbers.
    pub fn create(namespaces: Vec<u64>) -> anyhow::Result<Self> {
        let owner = std::process::id();
        let owner_start = start_time(owner).context("reading this process's start time")?;
        let record = Record { owner, owner_start, marker: format!("{owner}-{owner_start}"), namespaces, children: Vec::new() };
        let dir = state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let this = Self { path: dir.join(format!("netem-{owner}.json")), record };
        this.save()?;
        Ok(this)
    }

    /// The marker its children carry in [`MARKER_VAR`].
    pub fn marker(&self) -> &str {
        &self.record.marker
    }

    /// Adds a child's PID and rewrites the file.
    pub fn add_child(&mut self, pid: u32) -> anyhow::Result<()> {
        self.record.children.push(pid);
        self.save()
    }

    /// Writes the file atomically (a cleanup never reads half a record).
    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.record)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one cleanup did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Records of runs that are still running, left alone: (owner PID, record file).
    pub running: Vec<(u32, PathBuf)>,
    /// Records of killed runs that were removed.
    pub stale: usize,
    /// Processes ended: (PID, command line, PID of the killed run).
    pub ended: Vec<(u32, String, u32)>,
}

/// Ends every process that carries the marker of a killed run (SIGTERM, SIGKILL after `grace`) and removes the
/// records of killed runs. Once its processes are gone, nothing holds the run's namespaces: the kernel frees them.
pub fn cleanup(grace: Duration) -> anyhow::Result<Cleanup> {
    let mut done = Cleanup::default();
    let dir = state_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let is_record = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("netem-") && n.ends_with(".json"));
        if !is_record {
            continue;
        }
        let record: Record = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))?;
        if start_time(record.owner).ok() == Some(record.owner_start) {
            done.running.push((record.owner, path));
            continue;
        }
        let leftovers = marked_processes(&record.marker);
        let named: Vec<(u32, String)> = leftovers.iter().map(|&pid| (pid, command_line(pid))).collect();
        for &pid in &leftovers {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && leftovers.iter().any(|&pid| alive(pid)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &pid in &leftovers {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        done.ended.extend(named.into_iter().map(|(pid, command)| (pid, command, record.owner)));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        done.stale += 1;
    }
    Ok(done)
}

/// PIDs of the processes whose environment holds `TLAB_NETEM_RUN=marker`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let wanted = format!("{MARKER_VAR}={marker}");
    let Ok(proc) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry == wanted.as_bytes()))
        })
        .collect()
}

/// Whether `pid` runs (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| *state != "Z"))
}

/// The fields of `/proc/PID/stat` after the command name (the first is the state, field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> anyhow::Result<u64> {
    let fields = stat_fields(pid).with_context(|| format!("no process {pid}"))?;
    Ok(fields.get(19).context("short /proc/PID/stat")?.parse()?)
}

/// The command line of `pid`, for the report.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| raw.split(|&b| b == 0).filter(|w| !w.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
