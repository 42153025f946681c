//! Network namespaces owned by this process. A namespace is created on a short-lived thread with
//! `unshare(CLONE_NEWNET)` and kept alive by an open file descriptor: it has no name under /var/run/netns, so when
//! the process exits (even killed) the kernel destroys it and everything in it — unless a process still runs inside.
//! A child started with [`NetNs::spawn`] is killed by the kernel when the thread that started it ends, so it cannot
//! keep the namespace alive after a SIGKILL of its parent; its own descendants can (`tlab netem cleanup` finds them).
//!
//! A namespace is per thread: code runs "inside" by running on a thread that called `setns`, and any socket, TUN
//! device, child process or tokio runtime created there belongs to it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns, unshare};

use crate::Tally;
use crate::io_error::IoError;

/// An unnamed network namespace held by this process.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    label: &'static str,
}

impl NetNs {
    /// Creates a namespace with only a (down) loopback device, then brings `lo` up.
    pub fn new(label: &'static str) -> Result<Self, IoError> {
        let fd = std::thread::spawn(|| -> Result<OwnedFd, IoError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| IoError::os("unshare(CLONE_NEWNET) (needs root or a user namespace)", e))?;
            let file = File::open("/proc/thread-self/ns/net").map_err(|e| IoError::io("opening /proc/thread-self/ns/net", e))?;
            Ok(OwnedFd::from(file))
        })
        .join()
        .map_err(|_| IoError::Setup("namespace thread panicked".into()))??;
        let ns = Self { fd, label };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A path naming this namespace for commands such as `ip link set DEV netns PATH` (valid while `self` lives).
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// The namespace's inode number, as `/proc/PID/ns/net` of every process inside shows it (`net:[ID]`).
    pub fn id(&self) -> Result<u64, IoError> {
        let stat = nix::sys::stat::fstat(&self.fd).map_err(|e| IoError::os("fstat of a namespace", e))?;
        Ok(stat.st_ino)
    }

    /// Starts `command` inside this namespace as a child that the kernel kills (SIGKILL) when the calling thread
    /// ends — however the process ends, SIGKILL included. Call it from a thread that outlives the child (one that
    /// waits for it). The child is forked from the calling thread and enters the namespace before `exec`.
    // The one `unsafe` here: `pre_exec` runs between fork and exec, where only async-signal-safe calls are allowed;
    // the closure makes three plain syscalls and allocates nothing.
    #[allow(unsafe_code)]
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<Child> {
        let fd = self.fd.as_raw_fd();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl, getppid and setns are async-signal-safe syscalls; `fd` stays open in the parent (and so in
        // the forked child) for as long as `self` lives, which covers this call.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died between fork and prctl: no signal will come, so do not start at all.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        command.spawn()
    }

    /// Moves the calling thread into this namespace (for the rest of the thread's life).
    pub fn enter(&self) -> Result<(), IoError> {
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|e| IoError::os("setns(CLONE_NEWNET)", e))
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, IoError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    Ok(f())
                })
                .join()
                .map_err(|_| IoError::Setup(format!("thread in namespace {} panicked", self.label)))?
        })
    }

    /// Runs a command inside this namespace and waits for it (a child forked from a thread in the namespace is in it).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, IoError> {
        let output = self
            .run(|| Command::new(program).args(args).output())?
            .map_err(|e| IoError::io(&format!("running {program}"), e))?;
        Ok(output)
    }

    /// Runs `tc ARGS…` inside this namespace; a non-zero exit is an error carrying its stderr.
    pub fn tc(&self, args: &[&str]) -> Result<(), IoError> {
        self.checked("tc", args)
    }

    /// Runs `ip ARGS…` inside this namespace; a non-zero exit is an error carrying its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<(), IoError> {
        self.checked("ip", args)
    }

    /// Sets a sysctl inside this namespace (`net.*` sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), IoError> {
        self.checked("sysctl", &["-q", "-w", &format!("{key}={value}")])
    }

    /// Reads a sysctl inside this namespace (what a `net.*` key holds here, not in the host).
    pub fn sysctl_value(&self, key: &str) -> Result<String, IoError> {
        let output = self.exec("sysctl", &["-n", key])?;
        if !output.status.success() {
            return Err(IoError::Command {
                command: format!("sysctl -n {key}"),
                namespace: self.label,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The kernel's counters of device `dev` in this namespace (from `/proc/thread-self/net/dev`: sysfs would show
    /// the namespace it was mounted in, not this one).
    pub fn device_stats(&self, dev: &str) -> Result<DeviceStats, IoError> {
        let text = self
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?
            .map_err(|e| IoError::io("reading /proc/thread-self/net/dev", e))?;
        text.lines()
            .find_map(|line| {
                let (name, values) = line.split_once(':')?;
                if name.trim() != dev {
                    return None;
                }
                let v: Vec<u64> = values.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
                (v.len() >= 12).then(|| DeviceStats {
                    rx: Tally { bytes: v[0], packets: v[1] },
                    rx_dropped: v[3],
                    tx: Tally { bytes: v[8], packets: v[9] },
                    tx_dropped: v[11],
                })
            })
            .ok_or_else(|| IoError::Setup(format!("no device {dev} in namespace {}", self.label)))
    }

    fn checked(&self, program: &str, args: &[&str]) -> Result<(), IoError> {
        let output = self.exec(program, args)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(IoError::Command {
                command: format!("{program} {}", args.join(" ")),
                namespace: self.label,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

/// A device's counters as the kernel keeps them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    /// Received packets and bytes.
    pub rx: Tally,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Sent packets and bytes.
    pub tx: Tally,
    /// Packets dropped on send (for a TUN device: its queue to the reader was full).
    pub tx_dropped: u64,
}

/// Ends a child process by its PID: SIGTERM, then SIGKILL if it is still running after `grace`; reaps it.
pub fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // ESRCH: it exited in between; the wait below reaps it.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_isolated_and_have_loopback_up() {
        let a = NetNs::new("a").unwrap();
        let b = NetNs::new("b").unwrap();
        a.ip(&["link", "add", "tlabtest0", "type", "veth", "peer", "name", "tlabtest1"]).unwrap();
        let in_a = a.exec("ip", &["-o", "link"]).unwrap();
        let in_b = b.exec("ip", &["-o", "link"]).unwrap();
        let (in_a, in_b) = (String::from_utf8_lossy(&in_a.stdout), String::from_utf8_lossy(&in_b.stdout));
        assert!(in_a.contains("tlabtest0"), "{in_a}");
        assert!(!in_b.contains("tlabtest0"), "{in_b}");
        assert!(in_b.contains("lo:") && in_b.contains("UP"), "{in_b}");
        let host = String::from_utf8_lossy(&Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).to_string();
        assert!(!host.contains("tlabtest0"), "the device leaked into the host namespace");
    }

    #[test]
    fn spawned_children_run_inside_and_see_the_same_namespace_id() {
        let ns = NetNs::new("child").unwrap();
        let output = ns.spawn(Command::new("readlink").arg("/proc/self/ns/net").stdout(std::process::Stdio::piped())).unwrap();
        let output = output.wait_with_output().unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("net:[{}]", ns.id().unwrap()));
        let host = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(host.to_string_lossy(), format!("net:[{}]", ns.id().unwrap()));
    }

    #[test]
    fn sysctls_are_read_back_per_namespace() {
        let ns = NetNs::new("sysctl").unwrap();
        ns.sysctl("net.ipv4.tcp_congestion_control", "reno").unwrap();
        assert_eq!(ns.sysctl_value("net.ipv4.tcp_congestion_control").unwrap(), "reno");
        let err = ns.sysctl_value("net.ipv4.no_such_key").unwrap_err().to_string();
        assert!(err.contains("no_such_key") && err.contains("sysctl"), "{err}");
    }

    #[test]
    fn failing_commands_report_namespace_and_stderr() {
        let ns = NetNs::new("client").unwrap();
        let err = ns.ip(&["link", "set", "no-such-device", "up"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("client") && text.contains("no-such-device"), "{text}");
    }
}
