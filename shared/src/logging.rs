//! Log output of the long-running local processes (the local runner, the ops commands).
//!
//! `LOG_FORMAT=text` (the default) writes plain lines, coloured only when stdout is a terminal;
//! `LOG_FORMAT=json` writes one JSON object per line. `RUST_LOG` filters as usual. The Lambda
//! functions use the runtime's subscriber instead, which follows `AWS_LAMBDA_LOG_FORMAT`.

use std::io::IsTerminal;

use crate::settings::{SettingsError, var};

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str) -> Result<(), SettingsError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match var("LOG_FORMAT").as_deref() {
        None | Some("text") => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        Some("json") => builder.json().with_current_span(false).init(),
        Some(other) => {
            return Err(SettingsError::Invalid {
                name: "LOG_FORMAT",
                value: format!("{other} (use text or json)"),
            });
        }
    }
    Ok(())
}
