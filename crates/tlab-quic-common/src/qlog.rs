//! qlog traces of QUIC connections (quinn's `qlog` feature): while a [`QlogCapture`] is alive, every
//! [`crate::transport_config`] built gets a trace file of its own, `<prefix>-<n>.sqlog` (JSON-SEQ, qlog 0.3, the
//! format qvis and Wireshark's qlog tools open). A client builds one transport configuration per connection, so each
//! client connection has its own file; a server endpoint's one configuration serves all its connections, whose
//! events share that endpoint's file and are told apart by `group_id` (the connection's original destination
//! connection ID). quinn 0.11 emits packet sent / received / lost and recovery metrics (congestion window, RTT,
//! bytes in flight); frames are not itemised. The setting is process-wide, like the TLS key log
//! ([`tlab_core::tls::KeyLogCapture`]); a file is complete once its connections and endpoint are gone.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tlab_core::Error;

/// Where traces go while a capture is alive.
struct Target {
    prefix: PathBuf,
    files: Vec<PathBuf>,
    failed: Option<String>,
}

static TARGET: Mutex<Option<Target>> = Mutex::new(None);

/// A process-wide qlog capture, from [`QlogCapture::start`] until it is finished or dropped.
#[derive(Debug)]
pub struct QlogCapture(());

impl QlogCapture {
    /// Makes every QUIC transport configuration built from now on trace to `<prefix>-<n>.sqlog`, n = 0, 1, …;
    /// refused while another capture is alive.
    pub fn start(prefix: &Path) -> Result<Self, Error> {
        let mut target = TARGET.lock().unwrap_or_else(|p| p.into_inner());
        if target.is_some() {
            return Err(Error::Config("a qlog capture is already running in this process".into()));
        }
        *target = Some(Target { prefix: prefix.to_owned(), files: Vec::new(), failed: None });
        Ok(Self(()))
    }

    /// Ends the capture and returns the trace files it created, in creation order; `Err` if one could not be.
    pub fn finish(self) -> Result<Vec<PathBuf>, Error> {
        let target = TARGET.lock().unwrap_or_else(|p| p.into_inner()).take().expect("the capture's target lives until it ends");
        std::mem::forget(self);
        match target.failed {
            Some(reason) => Err(Error::Config(reason)),
            None => Ok(target.files),
        }
    }
}

impl Drop for QlogCapture {
    fn drop(&mut self) {
        TARGET.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A new trace for one transport configuration, when a capture is alive.
pub(crate) fn next_stream() -> Option<quinn::QlogStream> {
    let mut guard = TARGET.lock().unwrap_or_else(|p| p.into_inner());
    let target = guard.as_mut()?;
    let name = format!("{}-{}.sqlog", target.prefix.display(), target.files.len());
    let path = PathBuf::from(&name);
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(e) => {
            target.failed.get_or_insert(format!("creating qlog file {name}: {e}"));
            return None;
        }
    };
    let mut config = quinn::QlogConfig::default();
    config.writer(Box::new(BufWriter::new(file))).title(Some(format!("tlab {}", path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned()))));
    let stream = config.into_stream();
    if stream.is_none() {
        target.failed.get_or_insert(format!("starting the qlog trace {name}"));
    }
    target.files.push(path);
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_configuration_gets_its_own_trace_while_a_capture_lives() {
        let prefix = std::env::temp_dir().join(format!("tlab-qlog-{}", std::process::id()));
        let capture = QlogCapture::start(&prefix).unwrap();
        assert!(QlogCapture::start(&prefix).is_err(), "one capture at a time");
        let configs = [next_stream(), next_stream()];
        assert!(configs.iter().all(Option::is_some));
        drop(configs);
        let files = capture.finish().unwrap();
        assert_eq!(files, [0, 1].map(|n| PathBuf::from(format!("{}-{n}.sqlog", prefix.display()))));
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(text.contains("\"qlog_format\":\"JSON-SEQ\""), "{text}");
            std::fs::remove_file(file).unwrap();
        }
        assert!(next_stream().is_none(), "no capture, no trace");
    }
}
