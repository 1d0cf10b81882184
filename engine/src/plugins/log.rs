//! The host side of the log bridge: plugins call [`host_log`] with each event their own
//! copy of `tracing` records, and it is re-emitted here through the host's subscriber, with
//! the plugin's name as a field.

use tagcast_plugin_api::abi::{HostLogger, LogLevel, LogRecord};
use tracing::level_filters::LevelFilter;

/// The logger handed to each plugin at load, filtered at the host's current level.
pub fn host_logger() -> HostLogger {
    let max_level = match LevelFilter::current() {
        LevelFilter::OFF => LogLevel::Off,
        LevelFilter::ERROR => LogLevel::Error,
        LevelFilter::WARN => LogLevel::Warn,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    HostLogger {
        max_level,
        log: host_log,
    }
}

extern "C" fn host_log(record: &LogRecord<'_>) {
    let plugin = record.plugin.as_str();
    let origin = record.target.as_str();
    let fields = record.fields.as_str();
    let message = record.message.as_str();
    // tracing's macros need the level at compile time.
    macro_rules! forward {
        ($level:expr) => {
            if fields.is_empty() {
                tracing::event!(target: "tagcast::plugin", $level, plugin, origin, "{message}")
            } else {
                tracing::event!(target: "tagcast::plugin", $level, plugin, origin, fields, "{message}")
            }
        };
    }
    match record.level {
        LogLevel::Off => {}
        LogLevel::Error => forward!(tracing::Level::ERROR),
        LogLevel::Warn => forward!(tracing::Level::WARN),
        LogLevel::Info => forward!(tracing::Level::INFO),
        LogLevel::Debug => forward!(tracing::Level::DEBUG),
        LogLevel::Trace => forward!(tracing::Level::TRACE),
    }
}
