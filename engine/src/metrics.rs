//! The server's own counters that no other owner keeps, and the Prometheus text rendering of
//! every metric. Counters live with their owners (the hub, the chain, the source supervisor);
//! this module only adds the delivery counters and the latency histogram, and renders all.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Delivery counters, shared by every connection task.
#[derive(Default)]
pub struct Deliveries {
    /// `outdated` frames written to connections.
    pub notifications: AtomicU64,
    /// Cumulative histogram counts per bucket, plus one for +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of observed latencies, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Deliveries {
    /// Records one frame written `latency` after its change arrived.
    pub fn observe(&self, latency: Duration) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Builds Prometheus text exposition.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample without labels.
    pub fn sample(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.out, "{name} {value}");
        self
    }

    /// One sample with one label.
    pub fn labelled(
        &mut self,
        name: &str,
        label: &str,
        value_of_label: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _ = writeln!(
            self.out,
            "{name}{{{label}=\"{}\"}} {value}",
            escape(value_of_label)
        );
        self
    }

    /// One sample with two labels.
    pub fn labelled2(
        &mut self,
        name: &str,
        (l1, v1): (&str, &str),
        (l2, v2): (&str, &str),
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _ = writeln!(
            self.out,
            "{name}{{{l1}=\"{}\",{l2}=\"{}\"}} {value}",
            escape(v1),
            escape(v2)
        );
        self
    }

    /// The latency histogram of `deliveries`.
    pub fn histogram(&mut self, name: &str, help: &str, deliveries: &Deliveries) -> &mut Self {
        self.family(name, "histogram", help);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += deliveries.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += deliveries.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let sum = deliveries.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(self.out, "{name}_sum {sum}\n{name}_count {cumulative}");
        self
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_every_observation() {
        let d = Deliveries::default();
        d.observe(Duration::from_micros(100));
        d.observe(Duration::from_millis(3));
        d.observe(Duration::from_secs(10));
        let mut e = Exposition::default();
        e.histogram("h", "help", &d);
        let text = e.finish();
        assert!(text.contains("h_bucket{le=\"0.00025\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("h_count 3\n"), "{text}");
        assert_eq!(d.notifications.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.labelled("m", "plugin", "a\"b", 1);
        assert_eq!(e.finish(), "m{plugin=\"a\\\"b\"} 1\n");
    }
}
