//! `ckptd-plot RESULTS DIR`: draws `make bench`'s results as SVG plots in DIR, shown in
//! BENCHMARKS.md. RESULTS holds the `RESULT <part> <x> <values...>` lines that the
//! scripts/bench_*.sh parts print (their columns are listed in [`COLUMNS`]); each part may
//! appear once per size. Solid lines are ckptd, dashed ones the same tool run by hand.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// Each part's columns after `RESULT <part> <x>`, in the order its script prints them.
const COLUMNS: &[(&str, &[&str])] = &[
    // The disk's limit: a durable `dd` of the same bytes, in measure.sh's runs.
    ("disk", &["dd"]),
    (
        "process",
        &[
            "ckptd_dump",
            "criu_dump",
            "ckptd_frozen",
            "ckptd_restore",
            "criu_restore",
            "criu_frozen",
            "phase_dump",
            "phase_durable",
            "phase_release",
            "phase_catalog",
            "ckptd_dump_mean",
        ],
    ),
    (
        "container",
        &[
            "ckptd_dump",
            "runc_dump",
            "ckptd_restore",
            "runc_restore",
            "phase_dump",
            "phase_durable",
            "phase_release",
            "phase_catalog",
        ],
    ),
    (
        "docker",
        &[
            "ckptd_dump",
            "docker_dump",
            "ckptd_restore",
            "docker_restore",
        ],
    ),
    (
        "podman",
        &[
            "ckptd_dump",
            "podman_dump",
            "podman_export",
            "podman_export_sync",
            "ckptd_restore",
            "podman_restore",
            "podman_import",
        ],
    ),
    (
        "catalog",
        &[
            "list_p50",
            "list_p99",
            "get_p50",
            "get_p99",
            "retention",
            "startup",
            "rss_kib",
            "rss_after_kib",
        ],
    ),
];

/// part -> column -> (x, value), x ascending.
type Results = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

fn parse(text: &str) -> Result<Results> {
    let mut out = Results::new();
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("RESULT") {
            continue;
        }
        let (Some(part), Some(x)) = (words.next(), words.next()) else {
            bail!("line {}: no part and x: {line}", n + 1);
        };
        let Some((_, columns)) = COLUMNS.iter().find(|(p, _)| *p == part) else {
            continue; // a part without a plot
        };
        let x: f64 = x.parse().with_context(|| format!("line {}: x", n + 1))?;
        for (column, value) in columns.iter().zip(words) {
            let v: f64 = value
                .parse()
                .with_context(|| format!("line {}: {column} = {value:?}", n + 1))?;
            if v.is_finite() && v > 0.0 {
                let points = out
                    .entry(part.to_owned())
                    .or_default()
                    .entry((*column).to_owned())
                    .or_default();
                points.push((x, v));
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
    Ok(out)
}

/// One line of a plot: its legend, points, colour and whether it is the by-hand baseline.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
}

/// The lines for `column`s of the parts, scaled by `scale` (seconds to milliseconds, ...).
fn lines(r: &Results, wanted: &[(&str, &str, &str, RGBColor, bool)], scale: f64) -> Vec<Line> {
    wanted
        .iter()
        .filter_map(|(part, column, label, color, dashed)| {
            let points = r.get(*part)?.get(*column)?;
            Some(Line {
                label: (*label).to_owned(),
                points: points.iter().map(|(x, y)| (*x, y * scale)).collect(),
                color: *color,
                dashed: *dashed,
            })
        })
        .collect()
}

/// A log-log chart of `lines` into `path`.
fn draw(path: &Path, title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let root = SVGBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0 / 1.3..x1 * 1.3).log_scale(),
            (y0 / 1.5..y1 * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for l in lines {
        let style = l.color.stroke_width(2);
        let anno = if l.dashed {
            chart.draw_series(DashedLineSeries::new(l.points.iter().copied(), 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(l.points.iter().copied(), style))?
        };
        let color = l.color;
        anno.label(l.label.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
        chart.draw_series(
            l.points
                .iter()
                .map(|p| Circle::new(*p, 3, l.color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, results, dir] = args.as_slice() else {
        bail!("usage: ckptd-plot RESULTS DIR (RESULTS: the RESULT lines of `make bench`)");
    };
    let text =
        std::fs::read_to_string(results).with_context(|| format!("cannot read {results}"))?;
    let r = parse(&text)?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let size = "image size (MiB of process memory)";
    draw(
        &dir.join("checkpoint.svg"),
        "Checkpoint, durable: ckptd (solid) against each tool by hand (dashed)",
        size,
        "seconds",
        &lines(
            &r,
            &[
                ("process", "ckptd_dump", "ckptd, process", BLUE_, false),
                ("process", "criu_dump", "criu dump + sync", BLUE_, true),
                (
                    "disk",
                    "dd",
                    "dd conv=fdatasync (the disk's limit)",
                    PURPLE,
                    true,
                ),
                ("container", "ckptd_dump", "ckptd, runc", ORANGE, false),
                (
                    "container",
                    "runc_dump",
                    "runc checkpoint + sync",
                    ORANGE,
                    true,
                ),
                ("podman", "ckptd_dump", "ckptd, podman", GREEN_, false),
                (
                    "podman",
                    "podman_export_sync",
                    "podman checkpoint --export + sync",
                    GREEN_,
                    true,
                ),
                ("podman", "podman_dump", "podman checkpoint", PURPLE, true),
                ("docker", "ckptd_dump", "ckptd, docker", RED_, false),
                (
                    "docker",
                    "docker_dump",
                    "docker checkpoint create",
                    RED_,
                    true,
                ),
            ],
            1.0,
        ),
    )?;
    draw(
        &dir.join("restore.svg"),
        "Restore: ckptd (solid) against each tool by hand (dashed)",
        size,
        "seconds",
        &lines(
            &r,
            &[
                ("process", "ckptd_restore", "ckptd, process", BLUE_, false),
                ("process", "criu_restore", "criu restore", BLUE_, true),
                ("container", "ckptd_restore", "ckptd, runc", ORANGE, false),
                ("container", "runc_restore", "runc restore", ORANGE, true),
                ("podman", "ckptd_restore", "ckptd, podman", GREEN_, false),
                ("podman", "podman_restore", "podman restore", GREEN_, true),
                ("docker", "ckptd_restore", "ckptd, docker", RED_, false),
                (
                    "docker",
                    "docker_restore",
                    "docker start --checkpoint",
                    RED_,
                    true,
                ),
            ],
            1.0,
        ),
    )?;
    draw(
        &dir.join("frozen.svg"),
        "Time the process is frozen (CRIU's statistics)",
        size,
        "seconds",
        &lines(
            &r,
            &[
                ("process", "ckptd_frozen", "ckptd", BLUE_, false),
                ("process", "criu_frozen", "criu dump by hand", BLUE_, true),
            ],
            1.0,
        ),
    )?;
    draw(
        &dir.join("catalog.svg"),
        "API latency against catalog size (64 clients)",
        "checkpoints in the catalog",
        "milliseconds",
        &lines(
            &r,
            &[
                (
                    "catalog",
                    "list_p50",
                    "GET /v1/checkpoints p50",
                    BLUE_,
                    true,
                ),
                (
                    "catalog",
                    "list_p99",
                    "GET /v1/checkpoints p99",
                    BLUE_,
                    false,
                ),
                (
                    "catalog",
                    "get_p50",
                    "GET /v1/checkpoints/{name} p50",
                    ORANGE,
                    true,
                ),
                (
                    "catalog",
                    "get_p99",
                    "GET /v1/checkpoints/{name} p99",
                    ORANGE,
                    false,
                ),
            ],
            1000.0,
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines_by_part_and_sorts_by_x() {
        let r = parse(
            "noise\nRESULT process 512 0.5 0.4 0.2 0.3 0.3 0.2 0.3 0.1 0 0.004\n\
             RESULT process 64 0.1 0.1 0.04 0.08 0.08 0.05 0.05 0.02 0 0.004\n\
             RESULT lazy 1024 0.5 0.1 0.5 0.4\n",
        )
        .unwrap();
        assert_eq!(r["process"]["ckptd_dump"], vec![(64.0, 0.1), (512.0, 0.5)]);
        // zero (phase_release) is no point on a log scale
        assert!(!r["process"].contains_key("phase_release"));
        assert!(!r.contains_key("lazy"));
    }

    #[test]
    fn refuses_a_value_that_is_no_number() {
        assert!(parse("RESULT docker 512 x 1 1 1\n").is_err());
    }
}
