//! Errors of the I/O backends (namespaces, TUN devices, the forwarding loop).

/// What went wrong while setting up or running an emulated link.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was attempted.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file or device operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration command (`ip`, `sysctl`, `tc`) failed.
    #[error("`{command}` failed in namespace {namespace}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Which namespace it ran in.
        namespace: &'static str,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The kernel backend was asked for, but this kernel has no sch_netem.
    #[error(
        "the kernel backend needs sch_netem, which this kernel lacks (`tc` says \"Specified qdisc kind is unknown\"); \
         use the TUN emulator instead: --backend tun (or auto)"
    )]
    NetemUnavailable,
    /// The kernel backend cannot express the profile.
    #[error("the kernel backend cannot run this profile: {0}; use --backend tun (or auto)")]
    NotExpressible(#[from] crate::tc::TcError),
    /// Anything else that prevents the link from starting.
    #[error("link setup: {0}")]
    Setup(String),
}

impl IoError {
    pub(crate) fn os(what: &str, source: nix::Error) -> Self {
        Self::Os { what: what.to_string(), source }
    }

    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io { what: what.to_string(), source }
    }
}
