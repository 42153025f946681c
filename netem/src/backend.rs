//! One way to start "a link" whichever backend runs it: callers (`tlab netem run`, the experiment runner) pick a
//! [`Backend`] and get a [`RunningLink`] with the namespaces, counters and `stop` they need.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::capture::CaptureSink;
use crate::emulator::{EmulatedLink, LinkCounters};
use crate::health::Lateness;
use crate::io_error::IoError;
use crate::kernel::{KernelLink, netem_available};
use crate::namespace::NetNs;
use crate::tc::{TcError, tc_commands};
use crate::{Direction, Link, Profile};

/// Which implementation carries the packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The kernel when it has netem and can express the profile, else the TUN emulator.
    #[default]
    Auto,
    /// transport-lab's own per-packet emulator (any kernel with TUN; every profile feature).
    Tun,
    /// `tc` netem/tbf on a veth pair (needs sch_netem; no traces, no schedule).
    Kernel,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Tun => "tun",
            Backend::Kernel => "kernel",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "tun" => Ok(Backend::Tun),
            "kernel" => Ok(Backend::Kernel),
            other => Err(format!("unknown backend `{other}` (expected auto, tun or kernel)")),
        }
    }
}

/// Why the kernel backend cannot run `profile` on this machine, if it cannot.
pub fn kernel_obstacle(profile: &Profile) -> Result<Option<IoError>, IoError> {
    if !profile.schedule.is_empty() {
        return Ok(Some(TcError::Schedule.into()));
    }
    for (direction, impairments) in [(Direction::Uplink, &profile.uplink), (Direction::Downlink, &profile.downlink)] {
        if let Err(e) = tc_commands("probe", direction, impairments) {
            return Ok(Some(e.into()));
        }
    }
    Ok((!netem_available()?).then_some(IoError::NetemUnavailable))
}

/// A link started by one of the backends.
pub enum RunningLink {
    /// The TUN emulator.
    Tun(EmulatedLink),
    /// Kernel qdiscs on a veth pair.
    Kernel(KernelLink),
}

impl RunningLink {
    /// Starts `profile` on `backend` (`Auto` resolved as documented there); `seed` drives the TUN emulator's
    /// randomness (the kernel's is not seedable).
    pub fn start(profile: &Profile, seed: u64, backend: Backend) -> Result<Self, IoError> {
        let kernel = match backend {
            Backend::Tun => false,
            Backend::Kernel => match kernel_obstacle(profile)? {
                Some(e) => return Err(e),
                None => true,
            },
            Backend::Auto => kernel_obstacle(profile)?.is_none(),
        };
        Ok(if kernel {
            RunningLink::Kernel(KernelLink::start(profile)?)
        } else {
            RunningLink::Tun(EmulatedLink::start(Link::from_profile(profile, seed))?)
        })
    }

    /// Starts `profile` on the TUN emulator with its packets going to `capture` (the kernel's qdiscs cannot be
    /// captured before and after impairment); `backend` must be `Auto` or `Tun`.
    pub fn start_captured(profile: &Profile, seed: u64, backend: Backend, capture: CaptureSink) -> Result<Self, IoError> {
        if backend == Backend::Kernel {
            return Err(IoError::Setup("a capture needs the TUN emulator: use backend tun (or auto)".into()));
        }
        Ok(RunningLink::Tun(EmulatedLink::start_captured(Link::from_profile(profile, seed), Some(capture))?))
    }

    /// The backend that actually runs (never `Auto`).
    pub fn backend(&self) -> Backend {
        match self {
            RunningLink::Tun(_) => Backend::Tun,
            RunningLink::Kernel(_) => Backend::Kernel,
        }
    }

    /// The client's namespace.
    pub fn client(&self) -> &Arc<NetNs> {
        match self {
            RunningLink::Tun(l) => l.client(),
            RunningLink::Kernel(l) => l.client(),
        }
    }

    /// The server's namespace.
    pub fn server(&self) -> &Arc<NetNs> {
        match self {
            RunningLink::Tun(l) => l.server(),
            RunningLink::Kernel(l) => l.server(),
        }
    }

    /// The TCP congestion control running in both namespaces.
    pub fn congestion_control(&self) -> &'static str {
        match self {
            RunningLink::Tun(l) => l.congestion_control(),
            RunningLink::Kernel(l) => l.congestion_control(),
        }
    }

    /// The TUN forwarder's release lateness so far (the kernel's qdiscs do not report theirs).
    pub fn lateness(&self) -> Option<Lateness> {
        match self {
            RunningLink::Tun(l) => Some(l.lateness()),
            RunningLink::Kernel(_) => None,
        }
    }

    /// Whether the TUN forwarder got its real-time priority (no forwarding thread for the kernel backend).
    pub fn realtime(&self) -> Option<bool> {
        match self {
            RunningLink::Tun(l) => Some(l.realtime()),
            RunningLink::Kernel(_) => None,
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Result<LinkCounters, IoError> {
        match self {
            RunningLink::Tun(l) => Ok(l.counters()),
            RunningLink::Kernel(l) => l.counters(),
        }
    }

    /// Stops the link and returns the final counters.
    pub fn stop(self) -> Result<LinkCounters, IoError> {
        match self {
            RunningLink::Tun(l) => l.stop(),
            RunningLink::Kernel(l) => l.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_lowercase_in_files_and_on_the_command_line() {
        #[derive(serde::Deserialize)]
        struct Config {
            backend: Backend,
        }
        for (name, backend) in [("auto", Backend::Auto), ("tun", Backend::Tun), ("kernel", Backend::Kernel)] {
            let config: Config = toml::from_str(&format!("backend = \"{name}\"")).unwrap();
            assert_eq!(config.backend, backend);
            assert_eq!(name.parse::<Backend>(), Ok(backend));
            assert_eq!(backend.to_string(), name);
        }
        assert!("netem".parse::<Backend>().unwrap_err().contains("auto, tun or kernel"));
    }
}
