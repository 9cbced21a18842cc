//! Logging: one global `tracing` subscriber on stderr, filtered by RUST_LOG or LOG_LEVEL.

use std::{io::IsTerminal, str::FromStr};

use anyhow::{Context, bail};
use tracing_subscriber::{EnvFilter, fmt};

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "invalid log format {other:?} (expected pretty or json)"
            )),
        }
    }
}

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Transport crates whose debug output drowns ours; RUST_LOG can still turn them up.
const QUIET_DEPENDENCIES: &str =
    "h2=info,hyper=info,hyper_util=info,tonic=info,tower=info,rustls=info,reqwest=info";

/// Installs the global subscriber. `RUST_LOG` (full filter syntax) wins over `level`
/// (one of trace, debug, info, warn, error; default info), which comes from LOG_LEVEL.
pub fn init_logging(level: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let level = level
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("info");
    let level = level.to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        bail!(
            "invalid LOG_LEVEL {level:?} (expected one of {})",
            LEVELS.join(", ")
        );
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .with_context(|| format!("invalid RUST_LOG filter {spec:?}"))?,
        _ => EnvFilter::new(format!("{level},{QUIET_DEPENDENCIES}")),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("pretty".parse::<LogFormat>().unwrap(), LogFormat::Pretty);
        assert!(
            "xml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("pretty or json")
        );
    }

    #[test]
    fn bad_level_is_an_error_naming_the_choices() {
        let err = init_logging(Some("loud"), LogFormat::Pretty).unwrap_err();
        assert!(
            err.to_string().contains("trace, debug, info, warn, error"),
            "{err}"
        );
    }
}
