//! `tessera plot`: one PNG from the merged GPU benchmark results that `benches/gpu/run_all.py`
//! writes (DIR/results.json), a panel per kernel family, Tessera against PyTorch.
//!
//! Input schema (only these keys are read; anything else in the file is ignored):
//!
//! ```text
//! { "env": { "device": "...", ... },                       optional, shown in the title
//!   "families": [
//!     { "family": "attention",                             required
//!       "title": "...", "unit": "TFLOP/s", "x_label": "sequence length",   optional
//!       "status": "ok",                                    optional, shown when there are no points
//!       "reference_lines": [ { "label": "device copy", "value": 4100.0 } ],   optional
//!       "points": [ { "series": "d128 full", "x": 8192, "x_label": "sequence length",
//!                     "category": "cast f32->bf16",        optional: a bar chart by category
//!                     "tessera": 310.5, "torch": 402.1 } ] } ] }    values may be null
//! ```
//!
//! Numeric panels draw one colour per series, Tessera as solid lines with filled dots and PyTorch
//! as thin lines with crosses; x is logarithmic when the points span a factor of 8 or more, y
//! when they span more than 30. Panels whose points have a `category` draw grouped bars (Tessera,
//! PyTorch) per category with the reference lines across. Text uses DejaVu Sans, embedded in the
//! binary (the `dejavu` crate): no system font is read.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Args;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use serde_json::Value;
use tessera::outputs::OutputSet;
use tessera::runtime::common::files::{max_file_bytes, read_to_string_capped};
use tessera::TesseraError;

use crate::Result;

#[derive(Args)]
pub struct PlotArgs {
    /// The merged results written by benches/gpu/run_all.py (its DIR/results.json).
    #[arg(long)]
    pub results: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &args.out)?;
    // Bounded (TESSERA_MAX_FILE_BYTES): a results file is small; a device or FIFO would never end.
    let text = read_to_string_capped(&args.results, max_file_bytes())
        .map_err(|e| TesseraError::input("--results", format!("{}: {e}", args.results.display())))?;
    let figure =
        parse(&text).map_err(|m| TesseraError::input("--results", format!("{}: {m}", args.results.display())))?;
    // The PNG is drawn into the staged file, which carries the target's extension.
    outputs.write_path(out_slot, |staged| {
        // plotters may panic on a degenerate layout; report that as one error line, not a backtrace.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let rendered = std::panic::catch_unwind(|| render(&figure, staged));
        std::panic::set_hook(hook);
        rendered.unwrap_or_else(|p| {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            Err(format!("drawing failed: {}", what.unwrap_or_else(|| "panic".into())))
        })
    })?;
    outputs.commit()?;
    let points: usize = figure.panels.iter().map(|p| p.points.len()).sum();
    println!("wrote {} ({} panels, {points} points)", args.out.display(), figure.panels.len());
    Ok(())
}

// ---- the figure, read from the JSON -------------------------------------------------------------

struct Figure {
    title: String,
    panels: Vec<Panel>,
}

struct Panel {
    title: String,
    unit: String,
    x_label: String,
    status: Option<String>,
    references: Vec<(String, f64)>,
    points: Vec<Point>,
}

struct Point {
    series: String,
    x: f64,
    category: Option<String>,
    tessera: Option<f64>,
    torch: Option<f64>,
}

impl Panel {
    fn categorical(&self) -> bool {
        self.points.iter().any(|p| p.category.is_some())
    }

    /// Series names in order of first appearance.
    fn series(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.points.iter().map(|p| p.series.as_str()).filter(|s| seen.insert(*s)).collect()
    }
}

fn parse(text: &str) -> std::result::Result<Figure, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let families = root
        .get("families")
        .and_then(Value::as_array)
        .ok_or("not a merged results file: no \"families\" list at the top level")?;
    let mut title = "Tessera vs PyTorch".to_string();
    if let Some(device) = root.pointer("/env/device").and_then(Value::as_str) {
        title += &format!(" on {device}");
    }
    let panels = families.iter().enumerate().map(|(i, f)| parse_family(f, &format!("families[{i}]")));
    Ok(Figure { title, panels: panels.collect::<std::result::Result<_, _>>()? })
}

fn opt_str(v: &Value, key: &str, at: &str) -> std::result::Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key}: expected a string")),
    }
}

fn opt_num(v: &Value, key: &str, at: &str) -> std::result::Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().filter(|x| x.is_finite())),
        Some(_) => Err(format!("{at}.{key}: expected a number or null")),
    }
}

fn opt_list<'a>(v: &'a Value, key: &str, at: &str) -> std::result::Result<&'a [Value], String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{at}.{key}: expected a list")),
    }
}

fn parse_family(f: &Value, at: &str) -> std::result::Result<Panel, String> {
    if !f.is_object() {
        return Err(format!("{at}: expected an object"));
    }
    let family = opt_str(f, "family", at)?.ok_or(format!("{at}.family: missing"))?;
    let mut points = Vec::new();
    let mut first_x_label = None;
    for (j, p) in opt_list(f, "points", at)?.iter().enumerate() {
        let at = format!("{at}.points[{j}]");
        if !p.is_object() {
            return Err(format!("{at}: expected an object"));
        }
        let x = match p.get("x") {
            Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).ok_or(format!("{at}.x: not finite"))?,
            _ => return Err(format!("{at}.x: expected a number")),
        };
        if first_x_label.is_none() {
            first_x_label = opt_str(p, "x_label", &at)?;
        }
        points.push(Point {
            series: opt_str(p, "series", &at)?.unwrap_or_default(),
            x,
            category: opt_str(p, "category", &at)?,
            tessera: opt_num(p, "tessera", &at)?,
            torch: opt_num(p, "torch", &at)?,
        });
    }
    let mut references = Vec::new();
    for (j, r) in opt_list(f, "reference_lines", at)?.iter().enumerate() {
        let at = format!("{at}.reference_lines[{j}]");
        if let Some(value) = opt_num(r, "value", &at)? {
            references.push((opt_str(r, "label", &at)?.unwrap_or_default(), value));
        }
    }
    Ok(Panel {
        title: opt_str(f, "title", at)?.unwrap_or_else(|| family.clone()),
        unit: opt_str(f, "unit", at)?.unwrap_or_default(),
        x_label: opt_str(f, "x_label", at)?.or(first_x_label).unwrap_or_else(|| "x".into()),
        status: opt_str(f, "status", at)?,
        references,
        points,
    })
}

// ---- axes ---------------------------------------------------------------------------------------

/// One axis: plotted in `lo..hi` of the transformed value (log10 on a log axis), ticks in the same.
/// It is its own plotters coordinate: linear over `lo..hi`, key points exactly `ticks`.
#[derive(Clone)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn to_plot(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn plottable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    fn label(&self, t: f64) -> String {
        number(if self.log { 10f64.powf(t) } else { t })
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        // Clamped far outside the area, so that a stray value cannot overflow the pixel type.
        let f = ((v - self.lo) / (self.hi - self.lo)).clamp(-4.0, 5.0);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A short label: integers in full, others with up to three significant digits.
fn number(v: f64) -> String {
    let r = v.round();
    if (v - r).abs() <= 1e-6 * v.abs().max(1.0) && r.abs() < 1e7 {
        format!("{r:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-3 {
        let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.1e}")
    }
}

/// A nice step (1, 2 or 5 times a power of ten) giving at most about `n` intervals over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

/// The x axis of a numeric panel: log when the values span a factor of 8 or more, else linear;
/// ticks at the values themselves when there are few (benchmark sizes), else at round numbers.
fn x_axis(xs: &[f64]) -> Axis {
    let (min, max) = min_max(xs).unwrap_or((0.0, 1.0));
    let log = min > 0.0 && max / min >= 8.0;
    let mut distinct: Vec<f64> =
        xs.iter().filter(|x| x.is_finite()).map(|&x| if log { x.log10() } else { x }).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if log {
        let (lo, hi) = (min.log10() - 0.08, max.log10() + 0.08);
        let ticks = if distinct.len() <= 10 { distinct } else { decades(lo, hi) };
        return Axis { log: true, lo, hi, ticks };
    }
    let pad = if max > min { 0.05 * (max - min) } else { 0.5 * min.abs().max(1.0) };
    let mut axis = linear(min - pad, max + pad);
    if distinct.len() <= 6 {
        axis.ticks = distinct;
    }
    axis
}

/// The y axis: log when the values span more than a factor of 30, else linear from 0.
fn y_axis(ys: &[f64]) -> Axis {
    let (min, max) = min_max(ys).unwrap_or((0.0, 1.0));
    if min > 0.0 && max / min > 30.0 {
        let (lo, hi) = (min.log10() - 0.1, max.log10() + 0.1);
        return Axis { log: true, lo, hi, ticks: decades(lo, hi) };
    }
    let lo = min.min(0.0);
    let hi = if max > lo { max + 0.08 * (max - lo) } else { lo + 1.0 };
    linear(lo, hi)
}

fn linear(lo: f64, hi: f64) -> Axis {
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let step = nice_step(hi - lo, 6.0);
    let ticks = ((lo / step).ceil() as i64..=(hi / step).floor() as i64).map(|i| i as f64 * step).collect();
    Axis { log: false, lo, hi, ticks }
}

/// Ticks at 1, 2, 5 times the powers of ten within lo..hi (log10 values), or only the powers of
/// ten when the range spans more than three decades.
fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let mults: &[f64] = if hi - lo > 3.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let mut ticks = Vec::new();
    for e in lo.floor() as i32..=hi.ceil() as i32 {
        for m in mults {
            let t = (m * 10f64.powi(e)).log10();
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
    }
    ticks
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let mut it = v.iter().copied().filter(|x| x.is_finite());
    let first = it.next()?;
    Some(it.fold((first, first), |(a, b), x| (a.min(x), b.max(x))))
}

// ---- drawing ------------------------------------------------------------------------------------

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1400;
const PANEL_HEIGHT: u32 = 470;
const TITLE_HEIGHT: u32 = 50;
const LEGEND_WIDTH: u32 = 290;
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const TESSERA_BAR: RGBColor = RGBColor(31, 119, 180);
const TORCH_BAR: RGBColor = RGBColor(238, 76, 44);
const REFERENCE: RGBColor = RGBColor(90, 90, 90);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Draw<T = ()> = std::result::Result<T, String>;

fn err(e: impl Display) -> String {
    e.to_string()
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" once per process.
fn ensure_font() -> Draw {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".into())
    }
}

fn render(figure: &Figure, out: &Path) -> Draw {
    ensure_font()?;
    let rows = figure.panels.len().max(1) as u32;
    let root = BitMapBackend::new(out, (WIDTH, TITLE_HEIGHT + rows * PANEL_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    top.draw(&Text::new(figure.title.clone(), (16, 14), (FONT, 26).into_font())).map_err(err)?;
    if figure.panels.is_empty() {
        body.draw(&Text::new("no families in the results", (40, 40), (FONT, 20).into_font())).map_err(err)?;
    }
    for (panel, area) in figure.panels.iter().zip(body.split_evenly((rows as usize, 1))) {
        let (chart, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        if panel.categorical() {
            draw_bars(&chart, &legend, panel)?;
        } else {
            draw_lines(&chart, &legend, panel)?;
        }
    }
    root.present().map_err(err)
}

fn caption(panel: &Panel) -> String {
    if panel.unit.is_empty() {
        panel.title.clone()
    } else {
        format!("{} ({})", panel.title, panel.unit)
    }
}

/// A panel with nothing to plot: its caption and why.
fn draw_empty(area: &Area, panel: &Panel) -> Draw {
    area.draw(&Text::new(caption(panel), (70, 10), (FONT, 20).into_font())).map_err(err)?;
    let why = format!("no timing data (status: {})", panel.status.as_deref().unwrap_or("unknown"));
    area.draw(&Text::new(why, (70, 60), (FONT, 18).into_font().color(&REFERENCE))).map_err(err)
}

enum Mark {
    /// Solid thick line with a filled dot, or thin line with a cross.
    Line {
        color: RGBColor,
        tessera: bool,
    },
    Box(RGBColor),
    Rule(RGBColor),
}

/// Legend entries down the right-hand strip of a panel.
fn draw_legend(area: &Area, entries: &[(String, Mark)]) -> Draw {
    let mut y = 40;
    for (label, mark) in entries {
        match mark {
            Mark::Line { color, tessera } => {
                let style = if *tessera { color.stroke_width(3) } else { color.stroke_width(1) };
                area.draw(&PathElement::new(vec![(8, y), (40, y)], style)).map_err(err)?;
                if *tessera {
                    area.draw(&Circle::new((24, y), 4, color.filled())).map_err(err)?;
                } else {
                    area.draw(&Cross::new((24, y), 4, color.stroke_width(2))).map_err(err)?;
                }
            }
            Mark::Box(color) => area.draw(&Rectangle::new([(12, y - 6), (36, y + 6)], color.filled())).map_err(err)?,
            Mark::Rule(color) => {
                area.draw(&PathElement::new(vec![(8, y), (40, y)], color.stroke_width(2))).map_err(err)?
            }
        }
        area.draw(&Text::new(label.clone(), (48, y - 8), (FONT, 15).into_font())).map_err(err)?;
        y += 22;
    }
    Ok(())
}

fn draw_lines(area: &Area, legend: &Area, panel: &Panel) -> Draw {
    let values = |p: &Point| [p.tessera, p.torch].into_iter().flatten().filter(|v| v.is_finite());
    let plotted: Vec<&Point> = panel.points.iter().filter(|p| values(p).next().is_some()).collect();
    let xs: Vec<f64> = plotted.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = plotted.iter().flat_map(|p| values(p)).collect();
    let (x, y) = (x_axis(&xs), y_axis(&ys));
    let plotted: Vec<&Point> = plotted.into_iter().filter(|p| x.plottable(p.x)).collect();
    if plotted.is_empty() {
        return draw_empty(area, panel);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption(panel), (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(err)?;
    let (xf, yf) = (|t: &f64| x.label(*t), |t: &f64| y.label(*t));
    chart
        .configure_mesh()
        .x_desc(format!("{}{}", panel.x_label, if x.log { " (log)" } else { "" }))
        .y_desc(format!("{}{}", panel.unit, if y.log { " (log)" } else { "" }))
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    let mut entries = vec![
        ("Tessera".to_string(), Mark::Line { color: BLACK, tessera: true }),
        ("PyTorch".to_string(), Mark::Line { color: BLACK, tessera: false }),
    ];
    for (i, name) in panel.series().into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts: Vec<&Point> = plotted.iter().copied().filter(|p| p.series == name).collect();
        pts.sort_by(|a, b| a.x.total_cmp(&b.x));
        for tessera in [true, false] {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| if tessera { p.tessera } else { p.torch }.map(|v| (p.x, v)))
                .filter(|(_, v)| y.plottable(*v))
                .map(|(px, v)| (x.to_plot(px), y.to_plot(v)))
                .collect();
            let style = if tessera { color.stroke_width(3) } else { color.stroke_width(1) };
            chart.draw_series(LineSeries::new(line.clone(), style)).map_err(err)?;
            if tessera {
                chart.draw_series(line.iter().map(|&c| Circle::new(c, 4, color.filled()))).map_err(err)?;
            } else {
                chart.draw_series(line.iter().map(|&c| Cross::new(c, 4, color.stroke_width(2)))).map_err(err)?;
            }
        }
        entries.push((if name.is_empty() { "(unnamed)".into() } else { name.to_string() }, Mark::Box(color)));
    }
    draw_legend(legend, &entries)
}

fn draw_bars(area: &Area, legend: &Area, panel: &Panel) -> Draw {
    // One slot per category, in order of first appearance.
    let mut categories: Vec<&str> = Vec::new();
    for p in &panel.points {
        let c = p.category.as_deref().unwrap_or(p.series.as_str());
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    let slot = |p: &Point| categories.iter().position(|c| *c == p.category.as_deref().unwrap_or(&p.series));
    let mut ys: Vec<f64> = panel.points.iter().flat_map(|p| [p.tessera, p.torch]).flatten().collect();
    if ys.is_empty() {
        return draw_empty(area, panel);
    }
    ys.extend(panel.references.iter().map(|r| r.1));
    let mut y = y_axis(&ys);
    if y.log {
        y = linear(0.0, min_max(&ys).map_or(1.0, |m| m.1 * 1.08)); // bars need a linear axis from 0
    }
    let n = categories.len();
    let x = Axis { log: false, lo: -0.5, hi: n as f64 - 0.5, ticks: (0..n).map(|i| i as f64).collect() };
    let mut chart = ChartBuilder::on(area)
        .caption(caption(panel), (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(err)?;
    let xf = |t: &f64| {
        let i = t.round();
        if (t - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            categories[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let yf = |t: &f64| y.label(*t);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(panel.x_label.clone())
        .y_desc(panel.unit.clone())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    let width = 0.36;
    for p in &panel.points {
        let Some(i) = slot(p) else { continue };
        let c = i as f64;
        for (value, x0, color) in [(p.tessera, c - width, TESSERA_BAR), (p.torch, c, TORCH_BAR)] {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                let v = v.clamp(y.lo, y.hi);
                chart
                    .draw_series([Rectangle::new([(x0, 0f64.max(y.lo)), (x0 + width, v)], color.filled())])
                    .map_err(err)?;
            }
        }
    }
    let mut entries =
        vec![("Tessera".to_string(), Mark::Box(TESSERA_BAR)), ("PyTorch".to_string(), Mark::Box(TORCH_BAR))];
    for (label, value) in &panel.references {
        if *value >= y.lo && *value <= y.hi {
            chart
                .draw_series([PathElement::new(vec![(x.lo, *value), (x.hi, *value)], REFERENCE.stroke_width(2))])
                .map_err(err)?;
            entries.push((format!("{label} {}", number(*value)), Mark::Rule(REFERENCE)));
        }
    }
    draw_legend(legend, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    fn synthetic() -> String {
        serde_json::json!({
            "env": {"device": "Test GPU"},
            "families": [
                {"family": "attention", "title": "attention forward, bf16", "unit": "TFLOP/s",
                 "x_label": "sequence length", "status": "ok", "points": [
                    {"series": "d128 full", "x": 1024, "x_label": "sequence length", "tessera": 250.0, "torch": 300.0},
                    {"series": "d128 full", "x": 4096, "x_label": "sequence length", "tessera": 320.0, "torch": 380.0},
                    {"series": "d128 causal", "x": 1024, "x_label": "sequence length", "tessera": 150.0, "torch": null},
                    {"series": "d128 causal", "x": 4096, "x_label": "sequence length", "tessera": 280.0, "torch": 330.0}]},
                {"family": "gemm_lora", "unit": "TFLOP/s", "x_label": "M", "points": [
                    {"series": "LoRA r16", "x": 1, "tessera": 0.4, "torch": 0.2},
                    {"series": "LoRA r16", "x": 4096, "tessera": 600.0, "torch": 500.0},
                    {"series": "GEMM", "x": 8192, "tessera": 650.0, "torch": 700.0}]},
                {"family": "amp", "unit": "GB/s", "x_label": "kernel",
                 "reference_lines": [{"label": "device copy", "value": 4000.0}], "points": [
                    {"series": "cast f32->bf16", "category": "cast f32->bf16", "x": 0, "tessera": 3800.0, "torch": 3000.0},
                    {"series": "adamw", "category": "adamw", "x": 1, "tessera": 3500.0, "torch": null}]},
                {"family": "timed_out", "status": "timeout", "points": []}
            ]
        })
        .to_string()
    }

    #[test]
    fn plot_renders_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let (json, png) = (dir.path().join("results.json"), dir.path().join("plot.png"));
        std::fs::write(&json, synthetic()).unwrap();
        run(PlotArgs { results: json, out: png.clone() }).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() > 1000, "{} bytes", bytes.len());
        assert_eq!(bytes[..8], PNG_SIGNATURE);
    }

    #[test]
    fn plot_renders_degenerate_input() {
        // One point, no torch value, no families at all: still a PNG, no panic.
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in [
            r#"{"families": [{"family": "f", "points": [{"x": 5, "tessera": 0}]}]}"#,
            r#"{"families": [{"family": "f", "points": [{"x": 0, "tessera": -1, "torch": null}]}]}"#,
            r#"{"families": [{"family": "f", "points": [{"x": 0, "category": "k", "tessera": 2}]}]}"#,
            r#"{"families": []}"#,
        ]
        .iter()
        .enumerate()
        {
            let png = dir.path().join(format!("{i}.png"));
            render(&parse(text).unwrap(), &png).unwrap();
            assert_eq!(std::fs::read(&png).unwrap()[..8], PNG_SIGNATURE);
        }
    }

    #[test]
    fn plot_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        let missing = run(PlotArgs { results: dir.path().join("missing.json"), out: out.clone() }).unwrap_err();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"families\": [").unwrap();
        let bad_json = run(PlotArgs { results: bad.clone(), out: out.clone() }).unwrap_err();
        std::fs::write(&bad, r#"{"families": [{"family": "f", "points": [{"x": "a"}]}]}"#).unwrap();
        let bad_x = run(PlotArgs { results: bad.clone(), out: out.clone() }).unwrap_err();
        std::fs::write(&bad, r#"{"bench": []}"#).unwrap();
        let not_merged = run(PlotArgs { results: bad, out: out.clone() }).unwrap_err();
        for (e, want) in [
            (missing, "missing.json"),
            (bad_json, "not valid JSON"),
            (bad_x, "families[0].points[0].x: expected a number"),
            (not_merged, "no \"families\" list"),
        ] {
            let msg = e.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(!out.exists());
    }

    #[test]
    fn axes() {
        let x = x_axis(&[1024.0, 2048.0, 4096.0, 16384.0]);
        assert!(x.log);
        assert_eq!(x.ticks.len(), 4);
        assert_eq!(x.label(x.ticks[3]), "16384");
        let y = y_axis(&[100.0, 400.0]);
        assert!(!y.log && y.lo == 0.0 && y.hi > 400.0);
        assert!(y_axis(&[0.1, 700.0]).log);
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(0.0123), "0.0123");
        assert_eq!(nice_step(10.0, 6.0), 2.0);
    }
}
