//! Logging: tracing to stderr, filtered by `RUST_LOG` (default `info`), so
//! stdout stays free for what the CLI prints.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls do nothing.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for people: log files and CI output stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
