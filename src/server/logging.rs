//! Log set-up of `lynq run`: JSON lines for log collectors, readable text on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::options::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level or directives were not understood.
    #[error("--log-level {level:?}: {source}")]
    Filter {
        /// What was given.
        level: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Another subscriber was installed first.
    #[error("installing the log subscriber: {0}")]
    Install(String),
}

/// Installs the process's log subscriber: `level` (else $RUST_LOG, else "info") in `format`.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), LoggingError> {
    let level = level.map(str::to_string).or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&level).map_err(|source| LoggingError::Filter { level, source })?;
    let terminal = std::io::stderr().is_terminal();
    // Colours only where a terminal shows them, not as escape codes in a file.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(terminal);
    let installed = if format.is_json(terminal) {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))
}
