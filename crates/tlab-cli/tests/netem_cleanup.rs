//! Nothing orphaned (needs root, as CI runs): a SIGKILLed `tlab netem run` takes its children with it, and
//! `tlab netem cleanup` ends what their descendants left. Each test keeps its run records in a directory of its own
//! (`TLAB_RUN_DIR`), so it never sees — or ends — another run's processes.
//!
//! To check that a namespace is gone the test holds a descriptor of it (`/proc/PID/ns/net` of a child, opened while
//! the child runs): that keeps the kernel from reusing its inode number, so "no process has this namespace" is exact,
//! and `nsenter` through the descriptor shows whether the run's TUN device still exists.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A fresh, empty `TLAB_RUN_DIR` for one test.
fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tlab-netem-cleanup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_run(dir: &Path, server: Option<&str>, command: &[&str]) -> Child {
    let mut run = Command::new(env!("CARGO_BIN_EXE_tlab"));
    run.args(["netem", "run", "--profile", "clean"]);
    if let Some(server) = server {
        run.args(["--server", server]);
    }
    run.arg("--").args(command).env("TLAB_RUN_DIR", dir).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    run.spawn().expect("start tlab netem run")
}

/// Polls `f` every 50 ms, at most `tries` times, until it returns `Some`.
fn poll<T>(tries: u32, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The run's record once it lists `children` child PIDs: (namespace inodes, child PIDs).
fn record(dir: &Path, run: &Child, children: usize) -> (Vec<u64>, Vec<u32>) {
    let path = dir.join(format!("netem-{}.json", run.id()));
    poll(600, || {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let pids: Vec<u32> = record["children"].as_array()?.iter().filter_map(|p| p.as_u64().map(|p| p as u32)).collect();
        let namespaces: Vec<u64> = record["namespaces"].as_array()?.iter().filter_map(serde_json::Value::as_u64).collect();
        (pids.len() == children).then_some((namespaces, pids))
    })
    .unwrap_or_else(|| panic!("no record with {children} children at {}", path.display()))
}

/// Whether `pid` runs (zombies waiting for their reaper count as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next() != Some('Z')))
        .unwrap_or(false)
}

/// Live processes inside the namespace with inode `ns`.
fn processes_in(ns: u64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns) && alive(pid))
        .collect()
}

/// The devices of the namespace held open as `ns`, by `ip -o link` run inside it.
fn devices(ns: &File) -> String {
    let path = format!("--net=/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
    let out = Command::new("nsenter").args([path.as_str(), "ip", "-o", "link"]).output().expect("nsenter");
    assert!(out.status.success(), "nsenter: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cleanup(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tlab")).args(["netem", "cleanup"]).env("TLAB_RUN_DIR", dir).output().unwrap();
    assert!(out.status.success(), "cleanup: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kill_run(mut run: Child) {
    run.kill().unwrap(); // SIGKILL: no handler runs, nothing of the run's own cleanup happens
    run.wait().unwrap();
}

#[test]
fn sigkilled_run_leaves_no_process_namespace_or_tun() {
    assert!(is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    let dir = run_dir("children");
    let run = start_run(&dir, Some("sleep 300"), &["sleep", "300"]);
    let (namespaces, children) = record(&dir, &run, 2);
    let held: Vec<File> = children.iter().map(|pid| File::open(format!("/proc/{pid}/ns/net")).unwrap()).collect();
    let mut inodes: Vec<u64> = held.iter().map(|f| f.metadata().unwrap().ino()).collect();
    inodes.sort_unstable();
    let mut recorded = namespaces.clone();
    recorded.sort_unstable();
    assert_eq!(inodes, recorded, "the children run in the two namespaces the record names");
    assert!(held.iter().all(|ns| devices(ns).contains("tlab0")), "both namespaces have the link device while it runs");

    kill_run(run);
    let gone = poll(200, || children.iter().all(|&pid| !alive(pid)).then_some(()));
    assert!(gone.is_some(), "children {children:?} outlived the SIGKILLed run");
    for (ns, file) in inodes.iter().zip(&held) {
        assert_eq!(processes_in(*ns), Vec::<u32>::new(), "a process still runs in namespace {ns}");
        assert!(!devices(file).contains("tlab0"), "the TUN device of namespace {ns} outlived the run");
    }
    let report = cleanup(&dir);
    assert!(report.contains("nothing left") && report.contains("1 stale records removed"), "{report}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "cleanup removed the record");
    assert!(cleanup(&dir).contains("0 stale records removed"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cleanup_ends_what_descendants_of_a_killed_run_left() {
    assert!(is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    let dir = run_dir("descendants");
    // The shell dies with the run; its background job is a grandchild the kernel does not signal.
    let run = start_run(&dir, None, &["sh", "-c", "sleep 300 & wait"]);
    let (_, children) = record(&dir, &run, 1);
    let shell = children[0];
    let grandchild: u32 = poll(200, || {
        let list = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        list.split_whitespace().next()?.parse().ok()
    })
    .expect("the shell's background job");
    let held = File::open(format!("/proc/{grandchild}/ns/net")).unwrap();
    let ns = held.metadata().unwrap().ino();

    kill_run(run);
    assert!(poll(200, || (!alive(shell)).then_some(())).is_some(), "the shell outlived the SIGKILLed run");
    assert!(alive(grandchild), "the grandchild is the leftover this test is about");
    assert_eq!(processes_in(ns), vec![grandchild], "the leftover keeps the client namespace alive");

    let report = cleanup(&dir);
    assert!(report.contains(&format!("ended PID {grandchild} (`sleep 300`)")), "{report}");
    assert!(poll(200, || (!alive(grandchild)).then_some(())).is_some(), "cleanup did not end PID {grandchild}");
    assert_eq!(processes_in(ns), Vec::<u32>::new());
    assert!(!devices(&held).contains("tlab0"));
    assert!(cleanup(&dir).contains("nothing left"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
