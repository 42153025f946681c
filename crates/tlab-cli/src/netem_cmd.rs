//! `tlab netem …`: put any command behind the link emulator, show profiles, calibrate, clean up.

use std::process::Command;

use anyhow::Context;
use tlab_netem::emulator::{CLIENT_ADDR, EmulatedLink, SERVER_ADDR};
use tlab_netem::{Link, Profile};

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
    /// Remove what a killed run could leave behind.
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
        NetemCommand::Run { profile, server, seed, command } => run_behind_link(&profile, server.as_deref(), seed, &command),
        NetemCommand::Selftest { json, seed } => selftest(json, seed),
        NetemCommand::Cleanup => {
            // Our namespaces are unnamed and owned by the process: the kernel removes them, their TUN devices and
            // routes when the process dies, however it dies. Nothing persistent is ever created.
            println!("nothing to clean: tlab's namespaces and TUN devices are unnamed and vanish with their process");
            Ok(())
        }
    }
}

fn run_behind_link(spec: &str, server: Option<&str>, seed: u64, command: &[String]) -> anyhow::Result<()> {
    let profile = load_profile(spec)?;
    let link = EmulatedLink::start(Link::from_profile(&profile, seed)).context("starting the emulated link")?;
    eprintln!(
        "tlab netem: profile {spec}, client {CLIENT_ADDR} ⇄ server {SERVER_ADDR}, TCP congestion control {}",
        link.congestion_control()
    );
    let mut server_child = match server {
        Some(line) => {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (program, args) = words.split_first().context("empty --server command")?;
            let child = link.server().run(|| Command::new(program).args(args).spawn())?.with_context(|| format!("starting `{line}`"))?;
            std::thread::sleep(std::time::Duration::from_millis(300));
            Some(child)
        }
        None => None,
    };
    let (program, args) = command.split_first().context("no command given")?;
    let status = link
        .client()
        .run(|| Command::new(program).args(args).env("TLAB_SERVER_ADDR", SERVER_ADDR.to_string()).status())?
        .with_context(|| format!("running `{}`", command.join(" ")))?;
    if let Some(child) = server_child.as_mut() {
        // End the server by its PID (never by name), then reap it.
        let _ = child.kill();
        let _ = child.wait();
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
    anyhow::ensure!(status.success(), "`{}` exited with {status}", command.join(" "));
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
