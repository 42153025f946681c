//! A TUN device (layer 3, no packet-information header): each read returns one IP packet the kernel routed into
//! the device; each write injects one IP packet as if it arrived from the wire.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::io_error::IoError;

mod ioctl {
    // TUNSETIFF is declared _IOW('T', 202, int) but takes a pointer to `struct ifreq`.
    nix::ioctl_write_ptr_bad!(tun_set_iff, nix::request_code_write!(b'T', 202, size_of::<libc::c_int>()), libc::ifreq);
}

/// An open TUN device in the namespace of the thread that created it.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates TUN device `name` (at most 15 bytes) in the calling thread's network namespace, non-blocking.
    pub fn create(name: &str) -> Result<Self, IoError> {
        if name.len() > 15 || name.is_empty() {
            return Err(IoError::Setup(format!("TUN name `{name}` must be 1 to 15 bytes")));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| IoError::io("opening /dev/net/tun", e))?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the fd is an open /dev/net/tun and `request` is a valid ifreq that outlives the call.
        unsafe { ioctl::tun_set_iff(file.as_raw_fd(), &request) }.map_err(|e| IoError::os(&format!("TUNSETIFF {name}"), e))?;
        Ok(Self { file, name: name.to_string() })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet into `buf`; `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, IoError> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(IoError::io(&format!("reading {}", self.name), e)),
        }
    }

    /// Injects one packet. A full device queue drops it and reports `Ok(false)` (counted by the caller).
    pub fn send(&self, packet: &[u8]) -> Result<bool, IoError> {
        match (&self.file).write(packet) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            // The kernel refuses malformed packets (e.g. corrupted headers) with EINVAL: that packet is lost, like on
            // a wire; the link goes on.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(IoError::io(&format!("writing {}", self.name), e)),
        }
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
