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
