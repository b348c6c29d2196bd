//! Figures as plain-text tables (stdout), JSON, and sections of `BENCHMARKS.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};
use serde::Serialize;

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// Section key in BENCHMARKS.md and the `--only` name.
    pub id: &'static str,
    pub title: String,
    /// What was measured and how, one paragraph.
    pub method: String,
    pub tables: Vec<Table>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
    /// Raw numbers for `--json` (name, value).
    pub metrics: Vec<(String, f64)>,
}

#[derive(Debug, Default, Serialize)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        widths
    }

    /// Aligned plain text: first column left-aligned, the rest right-aligned.
    pub fn to_text(&self) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    let pad = " ".repeat(w - c.chars().count());
                    if i == 0 {
                        format!("{c}{pad}")
                    } else {
                        format!("{pad}{c}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        out.push_str(&format!("| {} |\n", align.join(" | ")));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// A target and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Goal {
    pub target: String,
    pub met: bool,
    /// The measured value and the margin, e.g. "0.41 µs: met with 1.59 µs to spare".
    pub detail: String,
}

impl Goal {
    /// A goal "`what` under `limit` `unit`", judged on `value`.
    pub fn under(what: &str, value: f64, limit: f64, unit: &str) -> Goal {
        let met = value < limit;
        let detail = if met {
            format!(
                "{} {unit}: met, {} {unit} under ({:.1}× below the limit)",
                crate::stats::fmt(value),
                crate::stats::fmt(limit - value),
                limit / value
            )
        } else {
            format!(
                "{} {unit}: missed by {} {unit} ({:.1}× over)",
                crate::stats::fmt(value),
                crate::stats::fmt(value - limit),
                value / limit
            )
        };
        Goal {
            target: format!("{what} under {} {unit}", crate::stats::fmt(limit)),
            met,
            detail,
        }
    }

    fn line(&self) -> String {
        let mark = if self.met { "met" } else { "MISSED" };
        format!("goal [{mark}] {} — {}", self.target, self.detail)
    }
}

impl Figure {
    pub fn to_text(&self) -> String {
        let mut out = format!("== {} ==\n", self.title);
        for table in &self.tables {
            out.push_str(&format!("{}\n\n", table.to_text()));
        }
        for goal in &self.goals {
            out.push_str(&format!("{}\n", goal.line()));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    fn to_markdown(&self, meta: &Meta) -> String {
        let mut out = format!(
            "{}\n\nMeasured {} on the machine above with `{}`.\n\n",
            self.method, meta.date, meta.command
        );
        for table in &self.tables {
            out.push_str(&format!("{}\n", table.to_markdown()));
        }
        for goal in &self.goals {
            out.push_str(&format!(
                "- {}\n",
                goal.line().replacen("goal ", "Goal ", 1)
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }
}

/// Where and how the numbers were taken.
#[derive(Debug, Serialize)]
pub struct Meta {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    /// /proc/loadavg when the run started (other work on the machine skews the numbers).
    pub load: String,
    pub rustc: String,
    pub command: String,
    /// Wall time of each figure run, in seconds, in order.
    pub timings: Vec<(String, f64)>,
}

impl Meta {
    pub fn collect(args: &[String]) -> Meta {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into());
        let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut command = "cargo run --release -p golemw-bench".to_string();
        if !args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&args.join(" "));
        }
        Meta {
            date: utc_date(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory,
            kernel: format!("Linux {}", read("/proc/sys/kernel/osrelease").trim()),
            load: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            rustc,
            command,
            timings: Vec::new(),
        }
    }

    fn to_markdown(&self) -> String {
        format!(
            "- Machine: {}, {} cores (nproc), {} memory, {}\n\
             - Toolchain: {}, release profile, Wasmer 7.4.2 (Cranelift), wasmer-wasix 0.704.2\n\
             - Last run: {}, load average at its start {} (1, 5, 15 min)\n\
             - Command: `{}` (from the repository root)\n\
             - Data directories: temporary, under `target/bench-tmp/` (the repository's disk)\n\
             - Wall time: {}\n",
            self.cpu,
            self.cores,
            self.memory,
            self.kernel,
            self.rustc,
            self.date,
            self.load,
            self.command,
            self.timings_text()
        )
    }

    /// "12.3 min (host-calls 41 s, oplog 35 s, ...)": the suite must stay under 15 minutes.
    pub fn timings_text(&self) -> String {
        let total: f64 = self.timings.iter().map(|(_, s)| s).sum();
        let each: Vec<String> = self
            .timings
            .iter()
            .map(|(id, s)| format!("{id} {s:.0} s"))
            .collect();
        format!("{:.1} min ({})", total / 60.0, each.join(", "))
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const PREAMBLE: &str = "# Benchmarks\n\n\
Measured by `tools/bench` (`golemw-bench`). Every ratio is against a baseline measured in the \
same run on the same machine. Re-running the command below rewrites the sections it measures \
(between the `bench:` markers); edit text outside them freely.\n";

/// Replaces (or appends) the marked section `key` of `doc` with `body`.
fn replace_section(doc: &mut String, key: &str, heading: &str, body: &str) {
    let begin = format!("<!-- bench:{key}:begin -->");
    let end = format!("<!-- bench:{key}:end -->");
    let block = format!("{begin}\n{body}{end}");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if e > b => doc.replace_range(b..e + end.len(), &block),
        _ => {
            if !doc.ends_with("\n\n") {
                doc.push('\n');
            }
            doc.push_str(&format!("{heading}\n\n{block}\n"));
        }
    }
}

/// Writes the run's description and every figure into `path`, keeping other sections.
pub fn update_markdown(path: &Path, meta: &Meta, figures: &[Figure]) -> Result<()> {
    let mut doc = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PREAMBLE.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    replace_section(
        &mut doc,
        "meta",
        "## Machine and command",
        &meta.to_markdown(),
    );
    for figure in figures {
        replace_section(
            &mut doc,
            figure.id,
            &format!("## {}", figure.title),
            &figure.to_markdown(meta),
        );
    }
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let mut doc = PREAMBLE.to_string();
        replace_section(&mut doc, "a", "## A", "one\n");
        replace_section(&mut doc, "b", "## B", "two\n");
        replace_section(&mut doc, "a", "## A", "three\n");
        assert!(doc.contains("## A\n\n<!-- bench:a:begin -->\nthree\n<!-- bench:a:end -->"));
        assert!(!doc.contains("one"));
        assert!(doc.find("## A").unwrap() < doc.find("## B").unwrap());
    }
}
