//! Link health in the report: the runs whose link missed its tolerance are flagged at the top and listed (and, unless
//! asked, left out of the summaries and figures); the calibration section shows how the link did in every run — the
//! distribution over runs of release lateness, late packets and CPU steal — before the one-off selftest.

use tlab_results::{LinkHealth, RunRecord};

use crate::document::Block;

/// The runs whose link was measured and missed its tolerance.
fn unhealthy(runs: &[RunRecord]) -> Vec<&RunRecord> {
    runs.iter().filter(|r| !r.link_ok()).collect()
}

/// The paragraph that flags unhealthy runs near the top, if there are any.
pub fn flag(runs: &[RunRecord], included: bool) -> Option<Block> {
    let bad = unhealthy(runs).len();
    let fate = if included { "kept in the summaries (--include-unhealthy)" } else { "left out of the summaries and figures (tlab report --include-unhealthy keeps them)" };
    (bad > 0).then(|| {
        Block::Paragraph(format!(
            "**link unhealthy in {bad} of {} runs** (p99 release lateness above the suite's link_tolerance_us): {fate}; see \"Emulator calibration\".",
            runs.len()
        ))
    })
}

/// Min, median, p90 and max of `values` (nearest rank), formatted; dashes without values.
fn spread(mut values: Vec<f64>, format: impl Fn(f64) -> String) -> Vec<String> {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return vec!["–".into(); 5];
    }
    let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    let mut row = vec![values.len().to_string()];
    row.extend([values[0], at(0.5), at(0.9), values[values.len() - 1]].map(format));
    row
}

/// The calibration section: link health over every run (all of them, included or not), then the selftest.
pub fn calibration(runs: &[RunRecord], selftest: Option<&serde_json::Value>) -> Vec<Block> {
    let mut blocks = vec![Block::Heading(2, "Emulator calibration".into())];
    let measured: Vec<&LinkHealth> = runs.iter().filter_map(|r| r.link.as_ref()).collect();
    if measured.is_empty() {
        blocks.push(Block::Paragraph("No run recorded its link's health (results from before link health was recorded).".into()));
    } else {
        let realtime = measured.iter().filter(|h| h.realtime == Some(true)).count();
        let tolerances: Vec<String> = measured.iter().fold(Vec::new(), |mut t, h| {
            if !t.contains(&h.tolerance_us.to_string()) {
                t.push(h.tolerance_us.to_string());
            }
            t
        });
        blocks.push(Block::Paragraph(format!(
            "Link health of every run, as the link recorded it during the run (release lateness = when the forwarder wrote a packet − when it was due): {} runs, {} unhealthy at a p99 tolerance of {} µs, {realtime} with a real-time forwarding thread.",
            measured.len(),
            unhealthy(runs).len(),
            tolerances.join(" / ")
        )));
        let us = |v: f64| format!("{v:.0}");
        let column = |f: fn(&LinkHealth) -> Option<f64>| measured.iter().filter_map(|h| f(h)).collect::<Vec<f64>>();
        let rows = vec![
            [vec!["lateness p50 (µs)".to_string()], spread(column(|h| h.lateness_p50_us), us)].concat(),
            [vec!["lateness p99 (µs)".to_string()], spread(column(|h| h.lateness_p99_us), us)].concat(),
            [vec!["lateness max (µs)".to_string()], spread(column(|h| h.lateness_max_us), us)].concat(),
            [vec!["packets late ≥ tolerance".to_string()], spread(column(|h| h.late_packets.map(|n| n as f64)), us)].concat(),
            [vec!["CPU steal (%)".to_string()], spread(column(|h| h.steal.map(|s| s * 100.0)), |v| format!("{v:.2}"))].concat(),
        ];
        let header = ["per run", "runs", "min", "median", "p90", "max"].map(String::from).to_vec();
        blocks.push(Block::Table(header, rows));
        let flagged: Vec<String> = unhealthy(runs)
            .into_iter()
            .map(|r| {
                let h = r.link.as_ref().expect("unhealthy runs have link health");
                format!(
                    "{} {} {} rep {} ({:?}): p99 {:.0} µs > {} µs, max {:.0} µs, {} packets late, steal {}",
                    r.experiment,
                    r.transport,
                    r.profile,
                    r.repetition,
                    r.status,
                    h.lateness_p99_us.unwrap_or(0.0),
                    h.tolerance_us,
                    h.lateness_max_us.unwrap_or(0.0),
                    h.late_packets.unwrap_or(0),
                    h.steal.map_or("unknown".into(), |s| format!("{:.2} %", s * 100.0))
                )
            })
            .collect();
        if !flagged.is_empty() {
            blocks.push(Block::Paragraph("Runs whose link missed its tolerance:".into()));
            blocks.push(Block::List(flagged));
        }
    }
    if let Some(selftest) = selftest {
        blocks.push(Block::Heading(3, "Selftest after the suite (tlab netem selftest)".into()));
        blocks.push(Block::Paragraph(format!("```\n{}\n```", serde_json::to_string_pretty(selftest).unwrap_or_default())));
    }
    blocks
}
