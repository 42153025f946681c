//! Minimal SVG charts (lines and grouped bars) with axes, ticks and a legend: enough for a paper figure, no
//! dependencies, deterministic output.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// A named series of points, optionally with a 95 % CI half-width per point (drawn as an error bar).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend label (says n where the points are means).
    pub name: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// CI half-width of each point, parallel to `points`; empty for none, `None` where a point has no CI (n = 1).
    pub ci: Vec<Option<f64>>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis (latency CCDFs).
    pub log_x: bool,
    /// Logarithmic y axis (latency CCDFs: the tail is readable).
    pub log_y: bool,
    /// Draw markers instead of lines (timelines).
    pub markers: bool,
    /// The data.
    pub series: Vec<Series>,
    /// Optional vertical line (x, label), e.g. the migration event.
    pub marker_x: Option<(f64, String)>,
}

/// A grouped bar chart with optional error bars.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Group labels along x.
    pub groups: Vec<String>,
    /// One bar per group per series: (value, 95 % CI half-width, `None` for n = 1); `None` where missing.
    pub series: Vec<(String, Vec<Option<(f64, Option<f64>)>>)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(magnitude * 10.0);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v.abs() < 1e-9 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() < 0.01 {
        format!("{v:.0e}")
    } else {
        format!("{v:.2}")
    }
}

fn frame(svg: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="Helvetica,Arial,sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title),
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 15.0,
        escape(x_label),
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        escape(y_label)
    );
}

fn legend(svg: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 18.0;
        let x = WIDTH - RIGHT + 15.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 18.0,
            y,
            escape(name)
        );
    }
}

impl LineChart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let mut svg = String::new();
        frame(&mut svg, &self.title, &self.x_label, &self.y_label);
        let ty = |y: f64| if self.log_y { y.max(1e-12).log10() } else { y };
        // Every point with its error bar's ends, in axis units (log where the axis is).
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points.iter().enumerate().flat_map(move |(i, &(x, y))| {
                    let ci = s.ci.get(i).copied().flatten().unwrap_or(0.0);
                    [(x, y - ci), (x, y + ci)]
                })
            })
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || *y > 0.0))
            .map(|(x, y)| (x, ty(y)))
            .collect();
        if points.is_empty() {
            svg.push_str(r#"<text x="300" y="200">no data</text></svg>"#);
            return svg;
        }
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let (mut x_lo, mut x_hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| (lo.min(tx(*x)), hi.max(tx(*x))));
        if let Some((mx, _)) = &self.marker_x {
            x_lo = x_lo.min(tx(*mx));
            x_hi = x_hi.max(tx(*mx));
        }
        // Timelines and log axes zoom on their data; other charts keep zero on the axis.
        let y_floor = if self.markers || self.log_y { f64::MAX } else { 0.0 };
        let (mut y_lo, y_hi) = points.iter().fold((y_floor, f64::MIN), |(lo, hi), (_, y)| (lo.min(*y), hi.max(*y)));
        if self.log_y {
            y_lo = y_lo.floor();
        }
        let headroom = if self.log_y { 0.0 } else { (y_hi - y_lo) * 0.05 };
        let (x_hi, y_hi) = (if x_hi > x_lo { x_hi } else { x_lo + 1.0 }, if y_hi > y_lo { y_hi + headroom } else { y_lo + 1.0 });
        let px = |x: f64| LEFT + (tx(x) - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT);
        let py = |y: f64| HEIGHT - BOTTOM - (ty(y) - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM);
        axes(&mut svg);
        let y_ticks: Vec<f64> = if self.log_y {
            (y_lo.floor() as i32..=y_hi.ceil() as i32).filter(|e| (y_lo - 1e-9..=y_hi + 1e-9).contains(&f64::from(*e))).map(|e| 10f64.powi(e)).collect()
        } else {
            ticks(y_lo, y_hi)
        };
        y_grid(&mut svg, &y_ticks, &py);
        let x_ticks: Vec<f64> = if self.log_x {
            // 1-2-5 steps per decade, so that even a narrow range gets labels.
            (x_lo.floor() as i32..=x_hi.ceil() as i32)
                .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
                .filter(|v| tx(*v) >= x_lo - 1e-9 && tx(*v) <= x_hi + 1e-9)
                .collect()
        } else {
            ticks(x_lo, x_hi)
        };
        for t in x_ticks {
            let _ = write!(svg, r#"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{}" stroke="whitesmoke"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"#, HEIGHT - BOTTOM, HEIGHT - BOTTOM + 18.0, fmt_tick(t), x = px(t));
        }
        if let Some((mx, label)) = &self.marker_x {
            let x = px(*mx);
            let _ = write!(svg, r#"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{}" stroke="black" stroke-dasharray="4 3"/><text x="{}" y="{}">{}</text>"#, HEIGHT - BOTTOM, x + 4.0, TOP + 12.0, escape(label));
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawable = |x: f64, y: f64| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
            let pts: Vec<(f64, f64)> = series.points.iter().copied().filter(|&(x, y)| drawable(x, y)).collect();
            for (i, &(x, y)) in series.points.iter().enumerate() {
                let Some(ci) = series.ci.get(i).copied().flatten().filter(|c| *c > 0.0 && drawable(x, y)) else { continue };
                let (cx, lo, hi) = (px(x), py(if self.log_y { (y - ci).max(y * 1e-3) } else { y - ci }), py(y + ci));
                let _ = write!(
                    svg,
                    r#"<path d="M{cx:.1},{lo:.1}V{hi:.1}M{l:.1},{lo:.1}h8M{l:.1},{hi:.1}h8" stroke="{color}" fill="none"/>"#,
                    l = cx - 4.0
                );
            }
            if self.markers {
                for (x, y) in &pts {
                    let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}"/>"#, px(*x), py(*y));
                }
            } else {
                let path: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
                let _ = write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, path.join(" "));
            }
        }
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        legend(&mut svg, &names);
        svg.push_str("</svg>");
        svg
    }
}

/// Horizontal grid lines at `ticks` (data units) with their labels on the y axis.
fn y_grid(svg: &mut String, ticks: &[f64], py: &dyn Fn(f64) -> f64) {
    for &t in ticks {
        let y = py(t);
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="gainsboro"/><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
}

fn axes(svg: &mut String) {
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="black"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>"#,
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT
    );
}

impl BarChart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let mut svg = String::new();
        frame(&mut svg, &self.title, "", &self.y_label);
        let values: Vec<f64> = self.series.iter().flat_map(|(_, v)| v.iter().flatten().map(|(m, c)| m + c.unwrap_or(0.0))).filter(|v| v.is_finite()).collect();
        let lows: Vec<f64> = self.series.iter().flat_map(|(_, v)| v.iter().flatten().map(|(m, c)| m - c.unwrap_or(0.0))).filter(|v| v.is_finite()).collect();
        if values.is_empty() || self.groups.is_empty() {
            svg.push_str(r#"<text x="300" y="200">no data</text></svg>"#);
            return svg;
        }
        let y_lo = lows.iter().copied().fold(0f64, f64::min);
        let y_hi = values.iter().copied().fold(f64::MIN, f64::max).max(y_lo + 1e-9) * 1.08;
        let py = |y: f64| HEIGHT - BOTTOM - (y - y_lo) / (y_hi - y_lo) * (HEIGHT - TOP - BOTTOM);
        axes(&mut svg);
        y_grid(&mut svg, &ticks(y_lo, y_hi), &py);
        let group_width = (WIDTH - LEFT - RIGHT) / self.groups.len() as f64;
        let bar_width = group_width * 0.8 / self.series.len().max(1) as f64;
        for (g, group) in self.groups.iter().enumerate() {
            let gx = LEFT + g as f64 * group_width;
            let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, gx + group_width / 2.0, HEIGHT - BOTTOM + 18.0, escape(group));
            for (s, (_, values)) in self.series.iter().enumerate() {
                let Some((mean, ci)) = values.get(g).copied().flatten() else { continue };
                let x = gx + group_width * 0.1 + s as f64 * bar_width;
                let (top, zero) = (py(mean.max(0.0)), py(mean.min(0.0)));
                let _ = write!(svg, r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#, bar_width * 0.92, (zero - top).abs(), COLORS[s % COLORS.len()]);
                if let Some(ci) = ci.filter(|c| *c > 0.0) {
                    let cx = x + bar_width * 0.46;
                    let _ = write!(svg, r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#, py(mean - ci), py(mean + ci));
                }
            }
        }
        let names: Vec<&str> = self.series.iter().map(|(n, _)| n.as_str()).collect();
        legend(&mut svg, &names);
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(3.0, 97.0);
        assert!(t.first().unwrap() >= &3.0 && t.last().unwrap() <= &97.0 && t.len() >= 4, "{t:?}");
    }

    #[test]
    fn charts_render_valid_looking_svg_with_their_data() {
        let line = LineChart {
            title: "CDF <test>".into(),
            x_label: "µs".into(),
            y_label: "share".into(),
            log_x: true,
            log_y: true,
            series: vec![Series { name: "ws".into(), points: vec![(10.0, 1.0), (100.0, 0.1), (1000.0, 0.001)], ci: vec![] }],
            ..LineChart::default()
        }
        .render();
        assert!(line.starts_with("<svg") && line.ends_with("</svg>"));
        assert!(line.contains("CDF &lt;test&gt;") && line.contains("polyline") && line.contains(">ws<"));
        for decade in [">1<", ">0.10<", ">0.01<", ">1e-3<"] {
            assert!(line.contains(decade), "log-y ticks at every decade: {decade}");
        }
        let with_ci = |ci: Vec<Option<f64>>| {
            let series = vec![Series { name: "quic (n = 5)".into(), points: vec![(0.0, 10.0), (1.0, 20.0)], ci }];
            LineChart { title: "p99".into(), series, ..LineChart::default() }.render()
        };
        assert_eq!(with_ci(vec![Some(2.0), Some(3.0)]).matches("<path").count(), 2, "one error bar per point");
        assert_eq!(with_ci(vec![None, Some(3.0)]).matches("<path").count(), 1, "no bar where n = 1");
        let bars = BarChart {
            title: "HOL".into(),
            y_label: "µs".into(),
            groups: vec!["lossy-2".into()],
            series: vec![("grpc".into(), vec![Some((120.0, Some(10.0)))]), ("quic".into(), vec![None])],
        }
        .render();
        assert_eq!(bars.matches("<rect").count(), 1 + 1 + 2, "background, one bar, two legend swatches");
    }

    #[test]
    fn empty_charts_say_so() {
        let empty = BarChart { title: "x".into(), y_label: "y".into(), groups: vec![], series: vec![] }.render();
        assert!(empty.contains("no data"));
    }
}
