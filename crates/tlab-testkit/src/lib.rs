//! `tlab-testkit` holds what every transport of transport-lab is tested with: the conformance suite
//! ([`conformance`], run against any [`tlab_core::Transport`] by [`conformance_tests!`] or, for datagram modes,
//! [`datagram_conformance_tests!`]), a test server with a fresh identity and token ([`TestServer`]), a TCP proxy that can
//! cut every connection mid-stream ([`ChaosProxy`]), and seeds read from `TLAB_SEED` ([`seed`]).

pub mod conformance;
mod proxy;
pub mod sim;

use std::sync::Arc;

use tlab_service::EchoService;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{ClientConfig, Limits, Server, ServerConfig, Transport};

pub use proxy::ChaosProxy;

/// The seed of randomized tests: `TLAB_SEED` if set, else a fixed default. Printed so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7_1ab);
    eprintln!("TLAB_SEED={seed}");
    seed
}

/// Sends test logs to the test's captured output (once per process). `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A server of one transport on 127.0.0.1 with a fresh self-signed identity and a random token.
pub struct TestServer {
    /// The running server.
    pub server: Box<dyn Server>,
    /// Its certificate (clients pin its hash).
    pub identity: Arc<Identity>,
    /// The token clients must present.
    pub token: String,
}

impl TestServer {
    /// Starts `transport` serving [`EchoService`] with `limits`.
    pub async fn start(transport: &dyn Transport, limits: Limits) -> Self {
        init_tracing();
        let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity"));
        let token = format!("token-{:x}", rand::random::<u64>());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            identity: identity.clone(),
            token: token.clone(),
            limits,
            service: Arc::new(EchoService::default()),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = transport.serve(config).await.expect("server starts");
        Self { server, identity, token }
    }

    /// A client configuration pinning this server's certificate, with the right token.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.server.url(), CertPin::Sha256(self.identity.sha256()), self.token.clone())
    }

    /// The same configuration with its URL pointed at `proxy` instead of the server.
    pub fn client_config_via(&self, proxy: &ChaosProxy) -> ClientConfig {
        let mut config = self.client_config();
        config.url = config.url.replacen(&self.server.local_addr().to_string(), &proxy.local_addr().to_string(), 1);
        config
    }
}

#[doc(hidden)]
pub use tlab_core::Transport as __Transport;

/// [`EchoService`] that counts the streams reaching it: proves that refused input never got to the application.
#[derive(Default)]
pub struct CountingService {
    echo: EchoService,
    served: std::sync::atomic::AtomicUsize,
}

impl CountingService {
    /// Streams handed to the application so far.
    pub fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl tlab_core::StreamService for CountingService {
    async fn serve(&self, open: tlab_core::StreamOpen, stream: tlab_core::MessageStream) {
        self.served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.echo.serve(open, stream).await;
    }
}

/// Runs a test body with a deadline so that a hang fails instead of blocking the suite.
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(std::time::Duration::from_secs(30), body).await.expect("test timed out");
}
