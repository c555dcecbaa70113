//! The benchmarks' figures: each one is reported as a MEASURED line (every run and the median)
//! and appended to target/e2e/bench.tsv, which `ansible-free-scripts/bench.sh` renders as one
//! table with the baseline beside each figure.

use std::io::Write;
use std::path::PathBuf;

/// What a figure is compared with.
pub enum Baseline {
    /// Measured in the same run (the naive way, or the same step without pgctl's help).
    Measured(&'static str, Vec<f64>),
    /// A figure recorded when issue #15 was filed, before the work it asked for.
    Filed(&'static str),
    /// What bounds the figure, in words.
    Text(&'static str),
    None,
}

/// Median (the upper one of an even count) and the smallest and largest run.
pub fn stats(runs: &[f64]) -> (f64, f64, f64) {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

/// `median 1.2 s (runs: 1.1, 1.2, 1.4 s)`.
pub fn summary(runs: &[f64], unit: &str) -> String {
    let each: Vec<String> = runs.iter().map(|t| format!("{t:.1}")).collect();
    format!("median {:.1} {unit} (runs: {} {unit})", stats(runs).0, each.join(", "))
}

fn table_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e/bench.tsv")
}

/// Records one figure: `runs` in `unit`, its baseline, and the goal issue #15 sets (if any).
pub fn figure(name: &str, unit: &str, runs: &[f64], baseline: Baseline, goal: &str) {
    if runs.is_empty() {
        return;
    }
    let base = match &baseline {
        Baseline::Measured(what, b) if !b.is_empty() => {
            let (m, lo, hi) = stats(b);
            format!("{m:.1} {unit} ({lo:.1}-{hi:.1}, {what}, same run)")
        }
        Baseline::Filed(text) => format!("{text} (when #15 was filed)"),
        Baseline::Text(text) => text.to_string(),
        _ => String::new(),
    };
    crate::report(&format!(
        "MEASURED: {name}: {}{}",
        summary(runs, unit),
        if base.is_empty() {
            String::new()
        } else {
            format!("; baseline {base}")
        }
    ));
    let (m, lo, hi) = stats(runs);
    let line = format!("{name}\t{m:.1} {unit}\t{lo:.1}-{hi:.1}\t{}\t{base}\t{goal}", runs.len());
    let path = table_file();
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_and_spread() {
        assert_eq!(super::stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(super::stats(&[4.0, 1.0]), (4.0, 1.0, 4.0));
        assert_eq!(super::summary(&[1.25, 2.0], "s"), "median 2.0 s (runs: 1.2, 2.0 s)");
    }
}
