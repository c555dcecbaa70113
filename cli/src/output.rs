//! The one printer. Results go to stdout, as text or as one JSON document (`--output json`);
//! progress, notices and warnings go to stderr as text in both modes, so stdout stays
//! parseable. Units everywhere: MiB/GiB for sizes, seconds with one decimal for durations.
//! Nothing else in the crate prints.

use crate::error::Kind;
use anyhow::Result;
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the output format for the whole run (once, from the command line).
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// Prints a command's result: `value` as JSON, or `text(value)` for people.
pub fn result<T: Serialize>(value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    let out = match format() {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Text => text(value),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", out.trim_end_matches('\n'))?;
    Ok(())
}

/// A result that is only text (a rendered file, a completion script): printed as is.
pub fn raw(text: &str) -> Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// A progress line or notice (stderr).
pub fn step(message: impl std::fmt::Display) {
    eprintln!("{message}");
}

/// Output a tool printed that the user should see as it was (stderr).
pub fn passthrough(text: &str) {
    if !text.is_empty() {
        eprint!(
            "{}",
            if text.ends_with('\n') {
                text.to_string()
            } else {
                format!("{text}\n")
            }
        );
    }
}

/// A warning (stderr).
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// The final error of a failed command (stderr), as text or as JSON.
pub fn error(err: &anyhow::Error, kind: Kind) {
    match format() {
        Format::Json => {
            let doc = serde_json::json!({"error": {"kind": kind, "code": kind.code(), "message": format!("{err:#}")}});
            eprintln!("{doc}");
        }
        Format::Text => eprintln!("error: {err:#}"),
    }
}

/// Asks on the terminal; the user must type `expected`. Refuses without a terminal.
pub fn confirm(question: &str, expected: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(crate::error::refused(format!(
            "{question}: no terminal to confirm on; pass --yes to confirm in scripts"
        )));
    }
    eprint!("{question} [type {expected} to confirm]: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != expected {
        return Err(crate::error::refused("not confirmed; nothing was changed"));
    }
    Ok(())
}

/// A table with a header row, ready to print.
pub fn table<R: IntoIterator<Item = String>>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for row in rows {
        t.add_row(row.into_iter().collect::<Vec<_>>());
    }
    t.to_string()
}

/// Bytes in MiB (or GiB from 10 GiB), one decimal.
pub fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 10.0 * 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Seconds, one decimal.
pub fn seconds(s: f64) -> String {
    format!("{s:.1} s")
}

/// The time each phase of a long operation took.
pub fn phases(phases: &[(String, f64)]) -> String {
    let mut out = String::from("time per phase:\n");
    for (name, secs) in phases {
        out.push_str(&format!("  {name:<48} {:>9}\n", seconds(*secs)));
    }
    out
}

/// Progress bars for work on several hosts at once (stderr; hidden when it is no terminal).
pub fn multi_progress() -> indicatif::MultiProgress {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    indicatif::MultiProgress::with_draw_target(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(size(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(size(1_078_000_000), "1028.1 MiB");
        assert_eq!(size(20 * 1024 * 1024 * 1024), "20.0 GiB");
        assert_eq!(seconds(1.26), "1.3 s");
        assert!(phases(&[("fetch".into(), 2.34)]).contains("fetch") && phases(&[("fetch".into(), 2.34)]).contains("2.3 s"));
    }
}

/// Wall time of the named phases of a long operation. `default()` announces each phase as it
/// starts (`== name`, for restores and migrations); `quiet()` only records them (for `up`,
/// which restores run inside their own phases).
#[derive(Default)]
pub struct Phases {
    done: Vec<(String, f64)>,
    current: Option<(String, std::time::Instant)>,
    quiet: bool,
}

impl Phases {
    pub fn quiet() -> Phases {
        Phases {
            quiet: true,
            ..Default::default()
        }
    }

    pub fn start(&mut self, name: &str) {
        self.close();
        if !self.quiet {
            step(format!("== {name}"));
        }
        self.current = Some((name.to_string(), std::time::Instant::now()));
    }

    /// Ends the current phase at `at` (a moment recorded while it ran) and goes on with `name`
    /// from there; not announced (it began already).
    pub fn split_at(&mut self, at: std::time::Instant, name: &str) {
        if let Some((current, started)) = self.current.take() {
            self.done.push((current, at.saturating_duration_since(started).as_secs_f64()));
        }
        self.current = Some((name.to_string(), at));
    }

    /// Sub-phases measured elsewhere (inside the recovery container), shown indented.
    pub fn sub(&mut self, parts: &[(String, f64)]) {
        self.close();
        self.done.extend(parts.iter().map(|(n, s)| (format!("  {n}"), *s)));
    }

    fn close(&mut self) {
        if let Some((name, started)) = self.current.take() {
            self.done.push((name, started.elapsed().as_secs_f64()));
        }
    }

    pub fn finish(mut self) -> Vec<(String, f64)> {
        self.close();
        self.done
    }
}

/// Phases on one line: `name 1.2s, name 0.4s`.
pub fn phases_inline(phases: &[(String, f64)]) -> String {
    phases
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.1}s"))
        .collect::<Vec<_>>()
        .join(", ")
}
