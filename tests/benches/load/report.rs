//! The printed report: one column per server measured, and with two servers (floor first)
//! a last column with the ratio tagcast/floor of each figure where a ratio means something.

use std::fmt::Write as _;

use crate::run::{Figures, PublishFigures};
use crate::workload::Shape;

/// One line of the table: a label, a text per server, and the number the ratio uses.
struct Row {
    label: &'static str,
    cells: Vec<String>,
    values: Vec<Option<f64>>,
    ratio: bool,
}

/// The report for `runs` (one or two) under `shape`, as text.
pub fn render(scenario: &str, shape: &Shape, runs: &[Figures]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tagcast load: scenario {scenario}");
    let _ = write!(
        out,
        "  {} connections, {} users ({} each), {} tags each of a pool of {}",
        shape.connections,
        shape.users(),
        shape.conns_per_user,
        shape.tags_per_conn,
        shape.tag_pool
    );
    if shape.rate > 0 {
        let _ = write!(
            out,
            "; {} publishes/s for {} s, {} tag(s) each, over {} HTTP connections",
            shape.rate,
            shape.duration.as_secs_f64(),
            shape.tags_per_publish,
            shape.publishers
        );
    }
    let _ = writeln!(out, "; seed {}", shape.seed);
    let _ = writeln!(
        out,
        "  load tool and server share this machine's {} cores over loopback",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(out);

    let rows = rows(runs);
    let names: Vec<&str> = runs.iter().map(|r| r.kind.name()).collect();
    let compare = runs.len() == 2;
    let _ = write!(out, "{:<34}", "");
    for name in &names {
        let _ = write!(out, "{name:>16}");
    }
    if compare {
        let _ = write!(out, "{:>16}", format!("{}/{}", names[1], names[0]));
    }
    let _ = writeln!(out);
    for row in rows {
        let _ = write!(out, "{:<34}", row.label);
        for cell in &row.cells {
            let _ = write!(out, "{cell:>16}");
        }
        if compare && row.ratio {
            let ratio = match (row.values[0], row.values[1]) {
                (Some(floor), Some(tagcast)) if floor != 0.0 => format!("{:.2}", tagcast / floor),
                _ => "-".into(),
            };
            let _ = write!(out, "{ratio:>16}");
        }
        let _ = writeln!(out);
    }

    for run in runs {
        let name = run.kind.name();
        if let (count @ 1.., Some(first)) = &run.client_failures {
            let _ = writeln!(
                out,
                "\n{name}: {count} connections ended early; first: {first}"
            );
        }
        if run.problems.count > 0 {
            let _ = writeln!(
                out,
                "\n{name}: {} warn/error log lines; first:",
                run.problems.count
            );
            for line in &run.problems.first {
                let _ = writeln!(out, "  {line}");
            }
        }
        if let Some(publish) = &run.publish {
            if publish.drain_cut {
                let _ = writeln!(
                    out,
                    "\n{name}: frames were still arriving when the drain gave up"
                );
            }
            for failure in &publish.log.failures {
                let _ = writeln!(out, "\n{name}: {failure}");
            }
            if !publish.outcome.examples.is_empty() {
                let _ = writeln!(out, "\n{name}: examples of trouble:");
                for example in &publish.outcome.examples {
                    let _ = writeln!(out, "  {example}");
                }
            }
        }
    }
    out
}

fn rows(runs: &[Figures]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row =
        |label, ratio, value: &dyn Fn(&Figures) -> Option<f64>, cell: &dyn Fn(f64) -> String| {
            let values: Vec<Option<f64>> = runs.iter().map(value).collect();
            let cells = values
                .iter()
                .map(|v| v.map_or_else(|| "-".into(), cell))
                .collect();
            rows.push(Row {
                label,
                cells,
                values,
                ratio,
            });
        };
    let mib = |v: f64| format!("{:.1} MiB", v / (1024.0 * 1024.0));
    let count = |v: f64| format!("{v:.0}");

    row(
        "setup (connect + subscribe)",
        true,
        &|r| Some(r.setup.as_secs_f64()),
        &|v| format!("{v:.2} s"),
    );
    row("server RSS idle", false, &|r| Some(r.rss_idle as f64), &mib);
    row(
        "server RSS subscribed",
        false,
        &|r| Some(r.rss_subscribed as f64),
        &mib,
    );
    row(
        "server RSS per connection",
        true,
        &|r| Some(r.rss_per_connection()),
        &|v| format!("{:.2} KiB", v / 1024.0),
    );

    if runs.iter().all(|r| r.publish.is_none()) {
        return rows;
    }
    let answered = |p: &PublishFigures| p.log.sent.iter().flatten().count() as f64;
    let ms = |v: f64| format!("{:.2} ms", v * 1000.0);
    let per_sec = |v: f64| format!("{v:.0} /s");
    let secs = |v: f64| format!("{v:.2} s");
    let latency =
        |p: &PublishFigures, pct: f64| p.outcome.latency_percentile(pct).map(|d| d.as_secs_f64());
    row(
        "publishes answered",
        false,
        &|r| publish(r, |p| Some(answered(p))),
        &count,
    );
    row(
        "publishes failed",
        false,
        &|r| publish(r, |p| Some(p.log.failed as f64)),
        &count,
    );
    row(
        "achieved publish rate",
        true,
        &|r| {
            publish(r, |p| {
                let elapsed = p.log.elapsed.as_secs_f64();
                (elapsed > 0.0).then(|| answered(p) / elapsed)
            })
        },
        &per_sec,
    );
    row(
        "deliveries expected",
        false,
        &|r| publish(r, |p| Some(p.outcome.expected as f64)),
        &count,
    );
    row(
        "delivered, own frame",
        false,
        &|r| publish(r, |p| Some(p.outcome.delivered_own as f64)),
        &count,
    );
    row(
        "delivered, merged frame",
        false,
        &|r| publish(r, |p| Some(p.outcome.delivered_merged as f64)),
        &count,
    );
    row(
        "missing",
        false,
        &|r| publish(r, |p| Some(p.outcome.missing as f64)),
        &count,
    );
    row(
        "unexpected frames",
        false,
        &|r| publish(r, |p| Some(p.outcome.unexpected_frames as f64)),
        &count,
    );
    row(
        "frames received",
        false,
        &|r| publish(r, |p| Some(p.outcome.frames as f64)),
        &count,
    );
    row(
        "deliveries per second",
        true,
        &|r| publish(r, |p| Some(p.outcome.deliveries_per_sec())),
        &per_sec,
    );
    row(
        "latency p50",
        true,
        &|r| publish(r, |p| latency(p, 50.0)),
        &ms,
    );
    row(
        "latency p99",
        true,
        &|r| publish(r, |p| latency(p, 99.0)),
        &ms,
    );
    row(
        "latency max",
        true,
        &|r| publish(r, |p| latency(p, 100.0)),
        &ms,
    );
    row(
        "server CPU, publish phase",
        true,
        &|r| publish(r, |p| Some(p.server_cpu.total().as_secs_f64())),
        &secs,
    );
    row(
        "  of which in the kernel",
        true,
        &|r| publish(r, |p| Some(p.server_cpu.system.as_secs_f64())),
        &secs,
    );
    row(
        "server CPU per delivery",
        true,
        &|r| publish(r, PublishFigures::cpu_per_delivery),
        &|v| format!("{:.2} µs", v * 1e6),
    );
    row(
        "load tool CPU, publish phase",
        false,
        &|r| publish(r, |p| Some(p.load_cpu.total().as_secs_f64())),
        &secs,
    );
    rows
}

/// A figure of the publish phase, `None` for a run without one.
fn publish(run: &Figures, figure: impl Fn(&PublishFigures) -> Option<f64>) -> Option<f64> {
    run.publish.as_ref().and_then(figure)
}
