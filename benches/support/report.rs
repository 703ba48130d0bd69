//! The report of a run: a markdown table (printed, and written to `target/bench/<name>.md`) and
//! the same figures with every raw number as JSON (`target/bench/<name>.json`), with the machine.

use std::path::PathBuf;

use serde_json::{Value, json};

/// The machine a run was made on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// CPU model name.
    pub cpu: String,
    /// 1-minute load average when the run started (other work on a shared machine).
    pub load_at_start: f64,
    /// 1-minute load average when the run ended.
    pub load_at_end: f64,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            cpu,
            load_at_start: load_average(),
            load_at_end: 0.0,
        }
    }

    /// One line for the table's header.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB memory, load average {:.2} at start, {:.2} at end",
            self.cores, self.cpu, self.memory_gib, self.load_at_start, self.load_at_end
        )
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// Which part of the issue (latency, floor, bulk, resync, memory).
    pub section: String,
    /// What is measured.
    pub figure: String,
    /// lynq's figure.
    pub lynq: String,
    /// What it is compared with, side by side from the same run.
    pub comparison: String,
    /// lynq / comparison (or as the note says); None when there is nothing to divide by.
    pub ratio: Option<f64>,
}

/// A run's report.
pub struct Report {
    name: String,
    title: String,
    machine: Machine,
    scale: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    data: serde_json::Map<String, Value>,
}

impl Report {
    /// An empty report written as `target/bench/<name>.{md,json}`.
    pub fn new(name: &str, title: &str, scale: String) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            machine: Machine::detect(),
            scale,
            rows: Vec::new(),
            notes: Vec::new(),
            data: serde_json::Map::new(),
        }
    }

    /// Adds a table row.
    pub fn row(&mut self, section: &str, figure: &str, lynq: String, comparison: String, ratio: Option<f64>) {
        self.rows.push(Row { section: section.into(), figure: figure.into(), lynq, comparison, ratio });
    }

    /// Adds a note printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records raw figures under `key` in the JSON.
    pub fn data(&mut self, key: &str, value: Value) {
        self.data.insert(key.into(), value);
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\nMachine: {}. Scale {}.\n\n", self.title, self.machine.line(), self.scale);
        out.push_str("| Section | Figure | lynq | Side by side (same run) | Ratio |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let ratio = r.ratio.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"));
            out.push_str(&format!("| {} | {} | {} | {} | {} |\n", r.section, r.figure, r.lynq, r.comparison, ratio));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }

    /// Writes the markdown and JSON files, prints the table, and returns the markdown path.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        self.machine.load_at_end = load_average();
        let dir = super::out_dir();
        std::fs::create_dir_all(&dir)?;
        let markdown = self.markdown();
        let md_path = dir.join(format!("{}.md", self.name));
        std::fs::write(&md_path, &markdown)?;
        let json = json!({
            "title": self.title, "machine": self.machine, "scale": self.scale,
            "rows": self.rows, "notes": self.notes, "data": self.data,
        });
        std::fs::write(dir.join(format!("{}.json", self.name)), serde_json::to_string_pretty(&json)?)?;
        println!("\n{markdown}\nwritten to {} and {}.json", md_path.display(), self.name);
        Ok(md_path)
    }
}
