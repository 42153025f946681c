//! `tlab`, the command line of transport-lab: lists the transport modes and their capabilities, serves the
//! echo/source/sink protocol on any of them, and runs a counted, timed client exchange against a server.

mod compare;
mod exchange;
mod netem_cmd;
mod run_cmd;
mod soak;
mod sweep;
mod version;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tlab_service::EchoService;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{ClientConfig, Limits, ServerConfig};

#[derive(Parser)]
#[command(
    name = "tlab",
    about = "transport-lab: compare real-time transports under emulated networks",
    disable_version_flag = true,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Print the version and the commit the binary was built from.
    #[arg(short = 'V', long)]
    version: bool,
    /// With --version: also the compiler, target, build profile and the protocol and TLS library versions.
    #[arg(long, requires = "version")]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List every transport mode and its capabilities.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the echo/source/sink protocol (docs/PROTOCOL.md) until Ctrl-C.
    Serve {
        /// Transport mode (see `tlab list`).
        #[arg(long)]
        transport: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// Token clients must present.
        #[arg(long, env = "TLAB_TOKEN")]
        token: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        web: WebArgs,
    },
    /// Run the same exchanges on every transport over loopback and write a results directory with a report.
    Compare {
        /// Transport modes and groups, as in suites: names, `all`, `reliable`, `multiplexed`, … (default: all).
        #[arg(long, value_delimiter = ',')]
        transports: Vec<String>,
        /// Messages per stream in each workload.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Results directory (default: results/compare-<UTC time>).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Run an experiment suite through the link emulator; writes results/<suite>-<UTC>/ and its report.
    Run {
        /// Suite file (default: experiments/quick.toml; with --resume, the manifest's suite file).
        suite: Option<PathBuf>,
        /// Run only part I of N of the matrix (for batch schedulers), e.g. `2/8`.
        #[arg(long, conflicts_with = "resume")]
        shard: Option<String>,
        /// Results directory.
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Run only the cells an interrupted or killed results directory is missing, with their planned seeds.
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Skip the emulator calibration at the end.
        #[arg(long)]
        no_calibration: bool,
        /// Keep per run a pcap of both sides of the link (before and after impairment), a TLS key log and qlog
        /// traces, in `captures/` (as the suite setting `capture = true`; needs the TUN emulator).
        #[arg(long, conflicts_with = "resume")]
        capture: bool,
        /// Cells run at once at the start (default: the suite's `concurrency`, else one per core); a cell whose
        /// link misses its tolerance beside others lowers it and runs again.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Vary one parameter (loss, delay, streams, size) for chosen transports and plot a metric against it.
    Sweep {
        /// The parameter.
        #[arg(long, value_enum)]
        param: sweep::Param,
        /// Values: `a,b,c` or `start:stop:step` (loss as a probability, delay in ms).
        #[arg(long)]
        values: String,
        /// Transport modes and groups, as in suites: names, `all`, `reliable`, `multiplexed`, ….
        #[arg(long, value_delimiter = ',', required = true)]
        transports: Vec<String>,
        /// `latency` (p99 one-way latency) or `hol` (HOL index ρ by targeted drops; `--messages` does not apply).
        #[arg(long, default_value = "latency")]
        experiment: String,
        /// Messages per stream per point.
        #[arg(long, default_value_t = 500)]
        messages: u64,
        /// Messages per second per stream.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Repetitions per point.
        #[arg(long, default_value_t = 1)]
        repetitions: u32,
        /// Results directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a suite file without running it: prints the matrix size or the first error.
    Check {
        /// Suite file.
        suite: PathBuf,
    },
    /// Regenerate summary.csv, plots, report.md and report.html of a results directory.
    Report {
        /// Results directory.
        dir: PathBuf,
        /// Keep runs whose link missed its tolerance (`link_ok: false`) in the summaries and figures.
        #[arg(long)]
        include_unhealthy: bool,
    },
    /// Combine results directories of one suite (e.g. shards) into one.
    Merge {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directories to merge.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
    },
    /// Hold many concurrent sessions per mode on loopback; report failures, memory and descriptors per connection.
    Soak(soak::SoakArgs),
    /// The link emulator: run a command behind it, show profiles, calibrate.
    Netem {
        #[command(subcommand)]
        command: netem_cmd::NetemCommand,
    },
    /// Connect to a server, exchange messages, print delivery counts and latency percentiles.
    Client {
        /// Transport mode (see `tlab list`).
        #[arg(long)]
        transport: String,
        /// The URL printed by `tlab serve`.
        #[arg(long)]
        connect: String,
        /// Token to present.
        #[arg(long, env = "TLAB_TOKEN")]
        token: String,
        /// The server certificate's SHA-256 (hex) printed by `tlab serve`.
        #[arg(long, conflicts_with = "insecure", required_unless_present = "insecure")]
        cert_sha256: Option<String>,
        /// Accept any server certificate (encrypted but unauthenticated).
        #[arg(long)]
        insecure: bool,
        /// Concurrent logical streams.
        #[arg(long, default_value_t = 1)]
        streams: u32,
        /// Messages per stream.
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// What each stream does.
        #[arg(long, value_enum, default_value_t = exchange::Pattern::Echo)]
        pattern: exchange::Pattern,
        /// Use the session layer (heartbeat, reconnect, resume).
        #[arg(long)]
        resilient: bool,
        /// Datagram modes only: a stream ends after this many milliseconds without a message.
        #[arg(long, default_value_t = 1000)]
        quiet_ms: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

#[derive(clap::Args)]
struct LimitArgs {
    /// Largest payload accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_message_size)]
    max_message_size: usize,
    /// Most streams per session.
    #[arg(long, default_value_t = Limits::default().max_streams)]
    max_streams: u32,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits { max_message_size: self.max_message_size, max_streams: self.max_streams }
    }
}

/// `tlab serve`'s connection deadlines and per-IP cap (docs/PROTOCOL.md, "Deadlines and connection limits").
#[derive(clap::Args, Debug, Clone, Copy)]
struct ConnectionArgs {
    /// Seconds a client may take for its TLS or QUIC handshake.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds from the handshake to the client's first complete request.
    #[arg(long, default_value_t = 10.0)]
    first_request_timeout: f64,
    /// Seconds a connection may stay idle (no request or stream open, no bytes) before it is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Most connections open at once from one client IP address (default: unlimited).
    #[arg(long)]
    max_connections_per_ip: Option<u32>,
}

/// `tlab serve`'s help for clients that are not ours: browsers (CORS) and verifying TLS clients (the PEM).
#[derive(clap::Args, Debug, Clone)]
struct WebArgs {
    /// A page origin (`scheme://host[:port]`) the HTTP-based modes allow browsers to call them from; repeatable;
    /// `*` or none = any origin.
    #[arg(long = "allow-origin")]
    allow_origin: Vec<String>,
    /// Where to write the certificate as PEM (default: `tlab-<port>.pem` in the system temp directory).
    #[arg(long)]
    cert_out: Option<PathBuf>,
}

impl ConnectionArgs {
    fn deadlines(&self) -> tlab_core::Deadlines {
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.001));
        tlab_core::Deadlines {
            handshake: secs(self.handshake_timeout),
            first_request: secs(self.first_request_timeout),
            idle: secs(self.idle_timeout),
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Without a subcommand only --version parses (clap prints the help for no arguments at all).
    let Some(command) = cli.command else {
        print!("{}", version::text(cli.verbose));
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List { json } => list(json),
        Command::Run { suite, shard, out, resume, no_calibration, capture, jobs } => tokio::task::spawn_blocking(move || {
            let jobs = jobs.map(usize::from);
            match resume {
                Some(dir) => run_cmd::resume(&dir, suite.as_deref(), !no_calibration, jobs).map(|_| ()),
                None => {
                    let suite = suite.unwrap_or_else(|| PathBuf::from("experiments/quick.toml"));
                    run_cmd::run(&suite, shard.as_deref(), out, !no_calibration, capture, jobs).map(|_| ())
                }
            }
        })
        .await?,
        Command::Sweep { param, values, transports, experiment, messages, rate, repetitions, out } => {
            let transports = run_cmd::resolve_transports(&transports)?;
            let sweep = sweep::Sweep { param, values: sweep::parse_values(&values)?, transports, experiment, messages, rate_hz: rate, repetitions };
            tokio::task::spawn_blocking(move || sweep::run(&sweep, out).map(|_| ())).await?
        }
        Command::Check { suite } => {
            let suite = run_cmd::load_suite(&suite)?;
            println!("{}: {} runs ({} profiles), seed {}", suite.name, suite.cells.len(), suite.profiles.len(), suite.seed);
            for n in &suite.not_applicable {
                println!("not applicable: experiment[{}] ({}, client {}) on {}: {}", n.experiment, n.kind, n.client.name(), n.transport, n.reason);
            }
            Ok(())
        }
        Command::Report { dir, include_unhealthy } => run_cmd::report(&dir, include_unhealthy),
        Command::Merge { out, parts } => run_cmd::merge(&out, &parts),
        Command::Soak(args) => soak::run(args).await,
        Command::Netem { command } => tokio::task::spawn_blocking(move || netem_cmd::run(command)).await?,
        Command::Compare { transports: names, messages, out } => {
            let names = run_cmd::resolve_transports(&if names.is_empty() { vec!["all".to_string()] } else { names })?;
            let out = out.unwrap_or_else(|| format!("results/compare-{}", utc_stamp()).into());
            let report = compare::run(&names, &compare::default_workloads(messages), &out).await?;
            println!("{}", std::fs::read_to_string(&report)?);
            eprintln!("report written to {}", report.display());
            Ok(())
        }
        Command::Serve { transport, listen, token, limits, connections, web } => {
            serve(&transport, listen, token, limits.limits(), connections, web).await
        }
        Command::Client {
            transport,
            connect,
            token,
            cert_sha256,
            insecure: _,
            streams,
            messages,
            size,
            pattern,
            resilient,
            quiet_ms,
            json,
            limits,
        } => {
            let pin = match cert_sha256 {
                Some(hex) => CertPin::from_hex(&hex)?,
                None => CertPin::AnyCertificate,
            };
            let mut config = ClientConfig::new(connect, pin, token);
            config.limits = limits.limits();
            let quiet = std::time::Duration::from_millis(quiet_ms);
            let plan = exchange::Plan { streams, messages, size, pattern, resilient, quiet };
            let report = exchange::run(Arc::from(tlab_transports::by_name(&transport)?), config, plan).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report);
            }
            anyhow::ensure!(
                report.delivery.lost == 0 && report.delivery.duplicated == 0,
                "{} lost, {} duplicated",
                report.delivery.lost,
                report.delivery.duplicated
            );
            Ok(())
        }
    }
}

fn list(json: bool) -> anyhow::Result<()> {
    let all = tlab_transports::all();
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|t| serde_json::json!({"name": t.name(), "description": t.description(), "capabilities": t.capabilities()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let yes = |b: bool| if b { "yes" } else { "-" };
    println!(
        "{:<12} {:<6} {:<6} {:<8} {:<7} {:<9} {:<9} {:<9}  description",
        "transport", "bidi", "mux", "reliable", "ordered", "datagram", "migrate", "reconnect"
    );
    for t in &all {
        let c = t.capabilities();
        println!(
            "{:<12} {:<6} {:<6} {:<8} {:<7} {:<9} {:<9} {:<9}  {}",
            t.name(),
            yes(c.bidirectional),
            yes(c.multiplexed),
            yes(c.reliable),
            yes(c.ordered),
            yes(c.datagrams),
            yes(c.native_migration),
            yes(c.native_reconnect),
            t.description()
        );
    }
    Ok(())
}

async fn serve(
    name: &str,
    listen: SocketAddr,
    token: String,
    limits: Limits,
    connections: ConnectionArgs,
    web: WebArgs,
) -> anyhow::Result<()> {
    let transport = tlab_transports::by_name(name)?;
    let mut names = vec!["localhost".to_string(), listen.ip().to_string()];
    names.dedup();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let identity = Arc::new(Identity::self_signed(&names).context("generating the TLS identity")?);
    let config = ServerConfig {
        listen,
        identity: identity.clone(),
        token: token.clone(),
        limits,
        service: Arc::new(EchoService::default()),
        congestion: tlab_core::config::CongestionControl::default(),
        deadlines: connections.deadlines(),
        max_connections_per_ip: connections.max_connections_per_ip,
        allow_origin: tlab_core::config::AllowOrigin::from_list(&web.allow_origin),
    };
    let server = transport.serve(config).await.with_context(|| format!("starting {name} on {listen}"))?;
    let cert_pem = web
        .cert_out
        .unwrap_or_else(|| std::env::temp_dir().join(format!("tlab-{}.pem", server.local_addr().port())));
    std::fs::write(&cert_pem, identity.certificate_pem())
        .with_context(|| format!("writing the certificate to {}", cert_pem.display()))?;
    let announcement = serde_json::json!({
        "transport": name,
        "url": server.url(),
        "listen": server.local_addr().to_string(),
        "cert_sha256": identity.sha256_hex(),
        "cert_spki_sha256": identity.spki_sha256_base64(),
        "cert_pem": cert_pem,
        "token": token,
    });
    println!("{announcement}");
    tracing::info!(
        cert_sha256 = identity.sha256_hex(),
        cert_spki_sha256 = identity.spki_sha256_base64(),
        cert_pem = %cert_pem.display(),
        "serving {name} at {}; Ctrl-C stops",
        server.url()
    );
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` for result directory names.
fn utc_stamp() -> String {
    tlab_experiments::runner::utc_now().chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_report(r: &exchange::Report) {
    println!(
        "{} {:?}: {} streams × {} messages × {} B in {:.3} s ({:.1} Mbit/s goodput)",
        r.transport, r.pattern, r.streams, r.messages, r.size, r.elapsed_s, r.goodput_mbit_s
    );
    println!(
        "delivered {} ({:.1} %)  lost {}  duplicated {}  out-of-order {}  reconnects {}",
        r.delivery.delivered,
        r.delivery_ratio * 100.0,
        r.delivery.lost,
        r.delivery.duplicated,
        r.delivery.out_of_order,
        r.reconnects
    );
    if let Some(l) = r.latency {
        let kind = if r.pattern == exchange::Pattern::Echo { "round-trip" } else { "one-way" };
        println!(
            "{kind} latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
    }
}
