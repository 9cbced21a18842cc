//! The logging flags every binary takes, defined once.

use crate::LogFormat;
use clap::Args;

/// `--log-level` / LOG_LEVEL and `--log-format` / LOG_FORMAT (RUST_LOG wins over the level).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level: trace, debug, info, warn, error (RUST_LOG wins when set).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: pretty or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the logger; on bad settings prints one line naming `program` and returns the
    /// exit status for bad input (2).
    pub fn init(&self, program: &str) -> Result<(), std::process::ExitCode> {
        crate::init_logging(Some(&self.log_level), self.log_format).map_err(|e| {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::from(2)
        })
    }
}
