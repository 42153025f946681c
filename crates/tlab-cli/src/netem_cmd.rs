//! `tlab netem …`: put any command behind the link emulator, show profiles, calibrate, clean up.
//!
//! `tlab netem run` starts its children with `NetNs::spawn`, so the kernel kills them when the run dies, and keeps a
//! record of the run ([`leftovers`]) that `tlab netem cleanup` uses to end whatever their descendants left running.

mod leftovers;

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tlab_netem::emulator::{CLIENT_ADDR, SERVER_ADDR};
use tlab_netem::namespace::terminate;
use tlab_netem::{Backend, Profile, RunningLink};

/// The `tlab netem` subcommands.
#[derive(clap::Subcommand)]
pub enum NetemCommand {
    /// Print a profile (a shipped name or a file path) as parsed, or list the shipped ones.
    Show {
        /// Profile name or path; omit to list the shipped profiles.
        profile: Option<String>,
    },
    /// Run CMD in the client namespace behind the emulated link; the server namespace is at 10.77.0.2.
    Run {
        /// Profile name or path.
        #[arg(long)]
        profile: String,
        /// Command started in the server namespace first (e.g. "iperf3 -s"), ended by PID afterwards.
        #[arg(long)]
        server: Option<String>,
        /// Seed of the link's randomness (default: TLAB_SEED or 1).
        #[arg(long, env = "TLAB_SEED", default_value_t = 1)]
        seed: u64,
        /// Who carries the packets: auto (kernel netem if present and able, else tun), tun or kernel.
        #[arg(long, default_value_t = Backend::Auto)]
        backend: Backend,
        /// The client command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Calibrate the emulator: delay error, loss rate with CI, TCP at 1 % loss vs the Mathis formula.
    Selftest {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seed of the link's randomness.
        #[arg(long, env = "TLAB_SEED", default_value_t = 1)]
        seed: u64,
    },
    /// Benchmark the TUN emulator: unimpaired TCP throughput, delay accuracy at 20 ms, unintended drops.
    Bench {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Length of the TCP bulk transfer, seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// UDP delay probes (one every 500 µs).
        #[arg(long, default_value_t = 5000)]
        probes: u64,
        /// Seed of the link's randomness.
        #[arg(long, env = "TLAB_SEED", default_value_t = 1)]
        seed: u64,
    },
    /// End what killed `tlab netem run`s left running (found by the marker in their children's environment).
    Cleanup,
}

/// A shipped profile by name, else a profile file.
pub fn load_profile(spec: &str) -> anyhow::Result<Profile> {
    if Profile::builtin_names().any(|n| n == spec) {
        return Ok(Profile::builtin(spec)?);
    }
    Ok(Profile::load(spec)?)
}

/// Runs one `tlab netem` subcommand.
pub fn run(command: NetemCommand) -> anyhow::Result<()> {
    match command {
        NetemCommand::Show { profile: None } => {
            for name in Profile::builtin_names() {
                println!("{name}");
            }
            Ok(())
        }
        NetemCommand::Show { profile: Some(spec) } => {
            println!("{:#?}", load_profile(&spec)?);
            Ok(())
        }
        NetemCommand::Run { profile, server, seed, backend, command } => {
            run_behind_link(&profile, server.as_deref(), seed, backend, &command)
        }
        NetemCommand::Selftest { json, seed } => selftest(json, seed),
        NetemCommand::Bench { json, seconds, probes, seed } => bench(json, Duration::from_secs_f64(seconds), probes, seed),
        NetemCommand::Cleanup => cleanup(),
    }
}

/// The first SIGINT or SIGTERM, by name. Called from a blocking task of the CLI's tokio runtime; registering the
/// handlers replaces the default action (dying without stopping children or the link).
fn signals() -> anyhow::Result<mpsc::Receiver<&'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Handle::current();
    let _guard = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = mpsc::channel();
    runtime.spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        let _ = tx.send(name);
    });
    Ok(rx)
}

/// Starts `line` in a namespace as a child that dies with this thread, and records its PID.
fn spawn_in(ns: &tlab_netem::namespace::NetNs, line: &[String], record: &mut leftovers::RunRecord) -> anyhow::Result<Child> {
    let (program, args) = line.split_first().context("empty command")?;
    let mut command = Command::new(program);
    command.args(args).env("TLAB_SERVER_ADDR", SERVER_ADDR.to_string()).env(leftovers::MARKER_VAR, record.marker());
    let child = ns.spawn(&mut command).with_context(|| format!("starting `{}`", line.join(" ")))?;
    record.add_child(child.id())?;
    Ok(child)
}

/// `tlab netem cleanup`: ends the leftovers of killed runs and says what it did.
fn cleanup() -> anyhow::Result<()> {
    let done = leftovers::cleanup(Duration::from_secs(2))?;
    for (owner, path) in &done.running {
        println!("left alone: run {owner} is still running ({})", path.display());
    }
    for (pid, command, owner) in &done.ended {
        println!("ended PID {pid} (`{command}`), left by killed run {owner}");
    }
    if done.ended.is_empty() {
        println!("nothing left: no process of a killed `tlab netem run` is running ({} stale records removed)", done.stale);
    } else {
        println!(
            "ended {} processes of {} killed runs; their namespaces and TUN devices are freed with them",
            done.ended.len(),
            done.stale
        );
    }
    Ok(())
}

fn run_behind_link(spec: &str, server: Option<&str>, seed: u64, backend: Backend, command: &[String]) -> anyhow::Result<()> {
    let profile = load_profile(spec)?;
    let signal = signals()?;
    let link = RunningLink::start(&profile, seed, backend).context("starting the link")?;
    eprintln!(
        "tlab netem: profile {spec}, backend {} (asked: {backend}), client {CLIENT_ADDR} ⇄ server {SERVER_ADDR}, TCP congestion control {}",
        link.backend(),
        link.congestion_control()
    );
    let mut record = leftovers::RunRecord::create(vec![link.client().id()?, link.server().id()?])?;
    let grace = Duration::from_secs(2);
    let mut server_child = match server {
        Some(line) => {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            let child = spawn_in(link.server(), &words, &mut record)?;
            std::thread::sleep(Duration::from_millis(300));
            Some(child)
        }
        None => None,
    };
    let mut client = spawn_in(link.client(), command, &mut record)?;
    // Wait for the client or a signal, whichever comes first.
    let outcome = loop {
        if let Some(status) = client.try_wait().context("waiting for the client command")? {
            break Ok(status);
        }
        if let Ok(name) = signal.try_recv() {
            break Err(name);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Children end by their PID (never by name): SIGTERM, then SIGKILL after the grace period.
    if let Err(name) = outcome {
        eprintln!("tlab netem: {name}: stopping the command, the server and the link");
        terminate(&mut client, grace).context("stopping the client command")?;
    }
    if let Some(child) = server_child.as_mut() {
        terminate(child, grace).context("stopping the server command")?;
    }
    let counters = link.stop()?;
    eprintln!(
        "tlab netem: uplink {} packets in, {} out, {} lost, {} queue drops; downlink {} in, {} out, {} lost, {} queue drops",
        counters.uplink.input.packets,
        counters.uplink.output.packets,
        counters.uplink.dropped_loss.packets,
        counters.uplink.dropped_queue.packets,
        counters.downlink.input.packets,
        counters.downlink.output.packets,
        counters.downlink.dropped_loss.packets,
        counters.downlink.dropped_queue.packets
    );
    match outcome {
        Ok(status) => anyhow::ensure!(status.success(), "`{}` exited with {status}", command.join(" ")),
        Err(name) => anyhow::bail!("interrupted by {name}"),
    }
    Ok(())
}

fn bench(json: bool, duration: Duration, probes: u64, seed: u64) -> anyhow::Result<()> {
    let report = tlab_netem::bench::run(seed, duration, probes, |step| eprintln!("bench: {step}…"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let [throughput, delay, drops] = report.goals_met();
    let (t, d, u) = (&report.throughput, &report.delay, &report.unintended_drops);
    println!("| benchmark | measured | goal | |");
    println!("|---|---:|---:|---|");
    println!(
        "| TCP bulk, unimpaired ({:.1} s, {}, forwarder {}) | {:.2} Gbit/s | ≥ {} Gbit/s | {} |",
        t.seconds,
        t.congestion_control,
        if t.realtime { "real-time" } else { "normal priority" },
        t.gbit_per_s,
        tlab_netem::bench::GOAL_THROUGHPUT_GBIT,
        verdict(throughput)
    );
    println!(
        "| abs. delay error at 20 ms ({} probes): p50 / p99 | {:.0} / {:.0} µs | p99 ≤ {} µs | {} |",
        d.samples,
        d.p50_abs_error_us,
        d.p99_abs_error_us,
        tlab_netem::bench::GOAL_DELAY_P99_US,
        verdict(delay)
    );
    println!(
        "| unintended drops (TUN refused {}, model {}, kernel {}, probes lost {}) | {} | 0 | {} |",
        u.write_refused,
        u.model,
        u.kernel,
        u.lost_probes,
        u.total(),
        verdict(drops)
    );
    Ok(())
}

fn selftest(json: bool, seed: u64) -> anyhow::Result<()> {
    let report = tlab_netem::selftest::run(seed, |step| eprintln!("selftest: {step}…"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("one-way delay (2000 UDP probes, no jitter configured)");
    println!("| configured | samples | p50 error | p99 error | min error |");
    println!("|---:|---:|---:|---:|---:|");
    for d in &report.delay {
        println!(
            "| {:.0} ms | {} | {:+.0} µs | {:+.0} µs | {:+.0} µs |",
            d.configured_ms, d.samples, d.p50_error_us, d.p99_error_us, d.min_error_us
        );
    }
    println!("\nloss (5000 UDP datagrams, uplink)");
    println!("| profile | configured | measured | 99.9 % CI |");
    println!("|---|---:|---:|---|");
    for l in &report.loss {
        println!(
            "| {} | {:.2} % | {:.2} % | [{:.2} %, {:.2} %] |",
            l.profile,
            l.configured * 100.0,
            l.measured * 100.0,
            l.ci999.0 * 100.0,
            l.ci999.1 * 100.0
        );
    }
    let m = &report.mathis;
    println!(
        "\nTCP bulk, {} ms RTT, {:.0} % loss, {}: measured {:.2} Mbit/s vs Mathis MSS/RTT·1.22/√p = {:.2} Mbit/s (ratio {:.2})",
        m.rtt_ms,
        m.loss * 100.0,
        m.congestion_control,
        m.measured_mbit,
        m.predicted_mbit,
        m.measured_mbit / m.predicted_mbit
    );
    Ok(())
}
