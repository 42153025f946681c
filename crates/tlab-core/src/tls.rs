//! TLS for every transport: a self-signed identity made at start (ECDSA P-256, valid from one hour ago for 13 days,
//! within the 14 days browsers accept by hash for WebTransport) and client-side pinning by the certificate's SHA-256.
//! The identity also gives what other clients need to trust it: the SHA-256 of its public key (SPKI) in base64,
//! the form of Chromium's `--ignore-certificate-errors-spki-list`, and the certificate as PEM for full verification.
//!
//! Key log: while a [`KeyLogCapture`] is alive, every configuration built here (TLS over TCP and QUIC alike) writes
//! its connections' secrets to the capture's file in the `SSLKEYLOGFILE` format, which Wireshark's
//! `tls.keylog_file` preference reads to decrypt TLS and QUIC. The setting is process-wide: the experiment runner
//! takes one per cell, and configurations built while it lives keep writing to its file.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, KeyLog, SignatureScheme};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::PublicKeyData as _;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The crypto provider every transport uses (ring), also installed as the process default so that libraries
/// building their own TLS configuration (reqwest, tonic) find it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            // Another library may have installed one first; ours is then unused as the default, which is fine.
            let _ = CryptoProvider::install_default((*provider).clone());
            provider
        })
        .clone()
}

/// A certificate and its private key.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    sha256: [u8; 32],
    spki_sha256: [u8; 32],
}

impl Identity {
    /// A fresh self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses), valid from one hour ago
    /// for 13 days (the WebTransport certificate-hash rule allows at most 14).
    pub fn self_signed(names: &[&str]) -> Result<Self, Error> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| Error::Tls(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(13);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Tls(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| Error::Tls(e.to_string()))?;
        Self::from_der(cert.der().clone(), key.serialize_der())
    }

    /// An identity from a DER certificate and the PKCS#8 DER key it was issued for (the public key's hash is taken
    /// from the key, so a key that does not parse is an error).
    pub fn from_der(cert: CertificateDer<'static>, key_pkcs8: Vec<u8>) -> Result<Self, Error> {
        let key = rcgen::KeyPair::try_from(key_pkcs8.as_slice()).map_err(|e| Error::Tls(format!("private key: {e}")))?;
        let spki_sha256 = Sha256::digest(key.subject_public_key_info()).into();
        let sha256 = Sha256::digest(cert.as_ref()).into();
        Ok(Self { cert, key_pkcs8, sha256, spki_sha256 })
    }

    /// The DER certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The PKCS#8 DER private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// SHA-256 of the DER certificate.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// SHA-256 of the DER certificate as lowercase hex (what `tlab serve` prints).
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER), standard padded base64: the value Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_sha256_base64(&self) -> String {
        BASE64.encode(self.spki_sha256)
    }

    /// The certificate as PEM (`-----BEGIN CERTIFICATE-----`, base64 in lines of 64), for clients that verify
    /// against it as their only trusted root (Node's `ca`, Python's `cafile`, curl's `--cacert`).
    pub fn certificate_pem(&self) -> String {
        let body = BASE64.encode(self.cert.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// A rustls server configuration presenting this identity, offering `alpn` protocols in order.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.private_key())
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        if let Some(log) = active_key_log() {
            config.key_log = log;
        }
        Ok(config)
    }
}

/// The key log of the live [`KeyLogCapture`], if any.
static KEY_LOG: Mutex<Option<Arc<KeyLogFile>>> = Mutex::new(None);

fn active_key_log() -> Option<Arc<dyn KeyLog>> {
    KEY_LOG.lock().unwrap_or_else(|p| p.into_inner()).clone().map(|log| log as Arc<dyn KeyLog>)
}

/// A process-wide key log to one file, from [`KeyLogCapture::start`] until it is finished or dropped.
#[derive(Debug)]
pub struct KeyLogCapture {
    log: Arc<KeyLogFile>,
}

impl KeyLogCapture {
    /// Creates `path` and makes it the key log of every configuration built from now on; refused while another
    /// capture is alive.
    pub fn start(path: &Path) -> Result<Self, Error> {
        let mut active = KEY_LOG.lock().unwrap_or_else(|p| p.into_inner());
        if active.is_some() {
            return Err(Error::Config("a TLS key log is already being captured in this process".into()));
        }
        let file = std::fs::File::create(path).map_err(|e| Error::Config(format!("creating key log {}: {e}", path.display())))?;
        let log = Arc::new(KeyLogFile { path: path.display().to_string(), file: Mutex::new(file), failed: AtomicBool::new(false) });
        *active = Some(log.clone());
        Ok(Self { log })
    }

    /// Stops handing the log to new configurations; `Err` if a secret could not be written.
    pub fn finish(self) -> Result<(), Error> {
        let failed = self.log.failed.load(Ordering::Relaxed);
        drop(self);
        if failed { Err(Error::Config("writing the TLS key log failed: it is incomplete".into())) } else { Ok(()) }
    }
}

impl Drop for KeyLogCapture {
    fn drop(&mut self) {
        let mut active = KEY_LOG.lock().unwrap_or_else(|p| p.into_inner());
        if active.as_ref().is_some_and(|log| Arc::ptr_eq(log, &self.log)) {
            *active = None;
        }
    }
}

/// Secrets as `LABEL <client random hex> <secret hex>` lines, one write per line.
#[derive(Debug)]
struct KeyLogFile {
    path: String,
    file: Mutex<std::fs::File>,
    failed: AtomicBool,
}

impl KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex::encode(client_random), hex::encode(secret));
        if let Err(e) = self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes()) {
            tracing::warn!(path = self.path, error = %e, "TLS key log write failed");
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// How a client checks the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertPin {
    /// Accept only the certificate with this SHA-256 (the hash `tlab serve` prints).
    Sha256([u8; 32]),
    /// Accept any certificate (still encrypted, not authenticated). For experiments on a private link only.
    AnyCertificate,
}

impl CertPin {
    /// Parses 64 hex digits (colons allowed, as browsers print them).
    pub fn from_hex(hex_digits: &str) -> Result<Self, Error> {
        let cleaned: String = hex_digits.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&cleaned).map_err(|e| Error::Config(format!("certificate hash `{hex_digits}`: {e}")))?;
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Config(format!("certificate hash `{hex_digits}` is not 32 bytes")))?;
        Ok(Self::Sha256(hash))
    }
}

/// The error of a client's TLS handshake over TCP to `address`: tokio-rustls reports certificate and protocol
/// failures as `InvalidData` (a [`Error::Tls`], not worth retrying); anything else is the connection failing under
/// the handshake (reset, refused, closed), a retryable [`Error::Connect`].
pub fn handshake_error(address: impl std::fmt::Display, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData => Error::Tls(e.to_string()),
        _ => Error::Connect { address: address.to_string(), reason: format!("TLS handshake: {e}") },
    }
}

/// A rustls client configuration that checks the server by `pin` and offers `alpn`.
pub fn client_config(pin: &CertPin, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, Error> {
    let provider = crypto_provider();
    let verifier = Arc::new(PinVerifier { pin: pin.clone(), provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if let Some(log) = active_key_log() {
        config.key_log = log;
    }
    Ok(config)
}

/// The server name to put in the TLS ClientHello: pinning makes the name irrelevant, so any valid one will do.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("valid DNS name")
}

#[derive(Debug)]
struct PinVerifier {
    pin: CertPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            CertPin::AnyCertificate => Ok(ServerCertVerified::assertion()),
            CertPin::Sha256(expected) => {
                let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if &actual == expected {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "certificate SHA-256 {} does not match the pinned {}",
                        hex::encode(actual),
                        hex::encode(expected)
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_hash_matches_certificate() {
        let id = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let expected: [u8; 32] = Sha256::digest(id.certificate().as_ref()).into();
        assert_eq!(id.sha256(), expected);
        assert_eq!(CertPin::from_hex(&id.sha256_hex()).unwrap(), CertPin::Sha256(expected));
    }

    #[test]
    fn spki_hash_and_pem_describe_the_certificate() {
        let id = Identity::self_signed(&["localhost"]).unwrap();
        let spki = BASE64.decode(id.spki_sha256_base64()).unwrap();
        assert_eq!(spki.len(), 32);
        let key = rcgen::KeyPair::try_from(id.key_pkcs8.as_slice()).unwrap();
        let spki_der = key.subject_public_key_info();
        assert_eq!(spki, Sha256::digest(&spki_der).to_vec());
        let cert = id.certificate().as_ref();
        assert!(cert.windows(spki_der.len()).any(|w| w == spki_der), "the certificate carries that SPKI verbatim");
        let pem = id.certificate_pem();
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
        assert_eq!(BASE64.decode(lines[1..lines.len() - 1].concat()).unwrap(), cert);
    }

    #[test]
    fn pin_parsing_accepts_colons_and_rejects_bad_lengths() {
        let colons = ["ab"; 32].join(":");
        assert_eq!(CertPin::from_hex(&colons).unwrap(), CertPin::Sha256([0xab; 32]));
        assert!(matches!(CertPin::from_hex("abcd"), Err(Error::Config(_))));
        assert!(matches!(CertPin::from_hex("zz"), Err(Error::Config(_))));
    }

    #[test]
    fn a_key_log_capture_reaches_configs_built_while_it_lives() {
        let path = std::env::temp_dir().join(format!("tlab-keylog-{}.keys", std::process::id()));
        let capture = KeyLogCapture::start(&path).unwrap();
        assert!(matches!(KeyLogCapture::start(&path), Err(Error::Config(_))), "one capture at a time");
        let id = Identity::self_signed(&["localhost"]).unwrap();
        let server = id.server_config(&[b"h2"]).unwrap();
        let client = client_config(&CertPin::AnyCertificate, &[b"h2"]).unwrap();
        client.key_log.log("CLIENT_TRAFFIC_SECRET_0", &[1, 2], &[0xab]);
        server.key_log.log("SERVER_TRAFFIC_SECRET_0", &[3], &[0xcd, 0xef]);
        capture.finish().unwrap();
        assert!(active_key_log().is_none());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "CLIENT_TRAFFIC_SECRET_0 0102 ab\nSERVER_TRAFFIC_SECRET_0 03 cdef\n");
        // After the capture, configurations log nowhere.
        let later = client_config(&CertPin::AnyCertificate, &[b"h2"]).unwrap();
        later.key_log.log("CLIENT_TRAFFIC_SECRET_0", &[9], &[9]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn configs_build() {
        let id = Identity::self_signed(&["localhost"]).unwrap();
        let server = id.server_config(&[b"h2"]).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        let client = client_config(&CertPin::Sha256(id.sha256()), &[b"h2"]).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
