//! `tlab sweep`: vary one parameter over a range for chosen transports and plot a metric against it. A sweep is an
//! ordinary suite generated into the results directory (so it is recorded, reproducible and reportable like any
//! other), plus `plots/sweep.svg`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use tlab_report::svg::{LineChart, Series};

/// The parameter a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Param {
    /// Bernoulli loss probability each way (0–1), at 20 ms one-way delay.
    Loss,
    /// One-way delay in ms, no loss.
    Delay,
    /// Concurrent streams.
    Streams,
    /// Payload bytes.
    Size,
}

/// What a sweep runs.
pub struct Sweep {
    /// Varied parameter.
    pub param: Param,
    /// Its values.
    pub values: Vec<f64>,
    /// Transport modes.
    pub transports: Vec<String>,
    /// `latency` (p99 one-way) or `hol` (HOL index ρ, targeted drops).
    pub experiment: String,
    /// Messages per stream.
    pub messages: u64,
    /// Messages per second per stream.
    pub rate_hz: u64,
    /// Repetitions per point.
    pub repetitions: u32,
}

impl Sweep {
    fn metric(&self) -> tlab_results::Metric {
        if self.experiment == "hol" { tlab_results::Metric::HolRho } else { tlab_results::Metric::OneWayP99 }
    }

    /// The suite text and the profile files it needs.
    fn suite(&self) -> anyhow::Result<(String, Vec<(String, String)>)> {
        anyhow::ensure!(!self.values.is_empty(), "--values is empty");
        anyhow::ensure!(self.experiment == "latency" || self.experiment == "hol", "--experiment must be latency or hol");
        let mut profiles = Vec::new();
        let mut suite = format!(
            "name = \"sweep-{:?}\"\ndescription = \"{} vs {:?}\"\nseed = 1\nrepetitions = {}\ntransports = {:?}\ncell_timeout_s = 120\n",
            self.param, self.metric(), self.param, self.repetitions, self.transports
        )
        .to_lowercase();
        if self.experiment == "hol" {
            // Targeted drops need the TUN emulator.
            suite.push_str("backend = \"tun\"\n");
        }
        let experiment = |streams: f64, size: f64| {
            // HOL runs epochs (one targeted drop each, 10 of them) instead of a message count.
            let (streams, length) =
                if self.experiment == "hol" { (streams.max(2.0), "epochs = 10".to_string()) } else { (streams, format!("messages = {}", self.messages)) };
            format!(
                "\n[[experiment]]\nkind = \"{}\"\n{length}\nsize = {}\nrate_hz = {}\nstreams = {}\n",
                self.experiment, size as usize, self.rate_hz, streams as u32
            )
        };
        match self.param {
            Param::Loss | Param::Delay => {
                for v in &self.values {
                    let (delay, loss) = if self.param == Param::Loss { (20.0, *v) } else { (*v, 0.0) };
                    anyhow::ensure!((0.0..=1.0).contains(&loss), "loss {loss} is not a probability");
                    anyhow::ensure!(delay >= 0.0, "delay {delay} is negative");
                    let name = format!("sweep-{:?}-{v}", self.param).to_lowercase();
                    profiles.push((
                        format!("{name}.toml"),
                        format!("name = \"{name}\"\n[link]\ndelay_ms = {delay}\nloss = {{ model = \"bernoulli\", p = {loss} }}\n"),
                    ));
                }
                let _ = writeln!(suite, "profiles = {:?}", profiles.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
                suite.push_str(&experiment(if self.experiment == "hol" { 8.0 } else { 1.0 }, 256.0));
            }
            Param::Streams | Param::Size => {
                suite.push_str("profiles = [\"lossy-2\"]\n");
                for v in &self.values {
                    anyhow::ensure!(*v >= 1.0 || self.param == Param::Size, "streams must be at least 1");
                    suite.push_str(&if self.param == Param::Streams { experiment(*v, 256.0) } else { experiment(1.0, *v) });
                }
            }
        }
        Ok((suite, profiles))
    }
}

/// Writes the sweep's suite into `out`, runs it, reports it and draws `plots/sweep.svg`.
pub fn run(sweep: &Sweep, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let (suite_text, profiles) = sweep.suite()?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("results/sweep-{:?}-{}", sweep.param, std::process::id()).to_lowercase()));
    std::fs::create_dir_all(&out)?;
    for (file, text) in &profiles {
        std::fs::write(out.join(file), text)?;
    }
    let suite_path = out.join("sweep.toml");
    std::fs::write(&suite_path, &suite_text)?;
    crate::run_cmd::run(&suite_path, None, Some(out.clone()), false, false, None)?;
    let runs = tlab_report::read_runs(&out)?;
    let summary = tlab_results::summarize(&runs);
    let x_of = |row: &tlab_results::SummaryRow| -> Option<f64> {
        let params: BTreeMap<String, serde_json::Value> = serde_json::from_str(&row.params).ok()?;
        match sweep.param {
            Param::Loss | Param::Delay => row.profile.rsplit('-').next()?.trim_end_matches(".toml").parse().ok(),
            Param::Streams => params.get("streams")?.as_f64(),
            Param::Size => params.get("size")?.as_f64(),
        }
    };
    let series = sweep
        .transports
        .iter()
        .map(|t| {
            let mut points: Vec<(f64, &tlab_results::SummaryRow)> =
                summary.iter().filter(|r| &r.transport == t && r.metric == sweep.metric().name()).filter_map(|r| Some((x_of(r)?, r))).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let n = points.iter().map(|(_, r)| r.n).max().unwrap_or(0);
            Series {
                name: format!("{t} (n ≤ {n})"),
                points: points.iter().map(|(x, r)| (*x, r.mean)).collect(),
                ci: points.iter().map(|(_, r)| r.ci95).collect(),
            }
        })
        .collect();
    let chart = LineChart {
        title: format!("{} vs {:?}", sweep.metric(), sweep.param),
        x_label: format!("{:?}", sweep.param).to_lowercase(),
        y_label: format!("{}, mean ± 95 % CI over {} repetitions", sweep.metric().label(), sweep.repetitions),
        series,
        ..LineChart::default()
    };
    let plot = out.join("plots/sweep.svg");
    std::fs::write(&plot, chart.render()).with_context(|| plot.display().to_string())?;
    eprintln!("sweep plot: {}", plot.display());
    Ok(out)
}

/// Parses `--values` given as `a,b,c` or `start:stop:step`.
pub fn parse_values(text: &str) -> anyhow::Result<Vec<f64>> {
    if let [start, stop, step] = text.split(':').collect::<Vec<_>>()[..] {
        let (start, stop, step): (f64, f64, f64) = (start.parse()?, stop.parse()?, step.parse()?);
        anyhow::ensure!(step > 0.0 && stop >= start, "range {text}: need start ≤ stop and step > 0");
        let count = ((stop - start) / step + 1e-9).floor() as usize + 1;
        anyhow::ensure!(count <= 100, "range {text} has {count} points; at most 100");
        return Ok((0..count).map(|i| start + step * i as f64).collect());
    }
    text.split(',').map(|v| v.trim().parse::<f64>().with_context(|| format!("value `{v}`"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_and_ranges() {
        assert_eq!(parse_values("0,0.01, 0.05").unwrap(), vec![0.0, 0.01, 0.05]);
        assert_eq!(parse_values("1:4:1").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(parse_values("4:1:1").is_err());
        assert!(parse_values("a,b").is_err());
        assert!(parse_values("0:1000:1").is_err());
    }

    #[test]
    fn a_loss_sweep_is_a_valid_suite() {
        let sweep = Sweep {
            param: Param::Loss,
            values: vec![0.0, 0.02],
            transports: vec!["ws".into(), "quic".into()],
            experiment: "latency".into(),
            messages: 10,
            rate_hz: 100,
            repetitions: 2,
        };
        let (text, profiles) = sweep.suite().unwrap();
        let dir = std::env::temp_dir().join(format!("tlab-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, body) in &profiles {
            std::fs::write(dir.join(file), body).unwrap();
        }
        let suite = tlab_experiments::Suite::parse(&text, &dir.join("sweep.toml"), &tlab_transports::catalogue()).unwrap();
        assert_eq!(suite.cells.len(), 2 * 2 * 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
