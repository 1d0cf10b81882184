//! Forwards the plugin's `tracing` events to the host. A cdylib has its own copy of
//! `tracing`, whose events never reach the host's subscriber by themselves: at load the host
//! hands over a [`HostLogger`], and [`install`] makes a subscriber that formats each enabled
//! event and calls it.
//!
//! Limitation: span fields and span nesting are not forwarded, only events; a plugin that
//! wants context on an event puts it in the event's fields.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::std_types::RStr;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Level, LevelFilter, Metadata};

use crate::abi::{HostLogger, LogLevel, LogRecord};

/// Installs the forwarder as this library's global subscriber. The first call wins.
pub(crate) fn install(plugin: &'static str, logger: HostLogger) {
    let forwarder = Forwarder {
        plugin,
        logger,
        next_span: AtomicU64::new(1),
    };
    // Fails only if a subscriber is already set, i.e. on a second load of the same library,
    // and then the first forwarder is already in place.
    let _ = tracing::subscriber::set_global_default(forwarder);
}

struct Forwarder {
    plugin: &'static str,
    logger: HostLogger,
    next_span: AtomicU64,
}

fn to_log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

impl Subscriber for Forwarder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The host's level is fixed for the life of the process, so interest is too.
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        to_log_level(metadata.level()) <= self.logger.max_level
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.logger.max_level {
            LogLevel::Off => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut fields = FieldWriter::default();
        event.record(&mut fields);
        let record = LogRecord {
            plugin: RStr::from_str(self.plugin),
            level: to_log_level(meta.level()),
            target: RStr::from_str(meta.target()),
            message: RStr::from_str(&fields.message),
            fields: RStr::from_str(&fields.rest),
        };
        (self.logger.log)(&record);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[derive(Default)]
struct FieldWriter {
    message: String,
    rest: String,
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.separate();
            // Writing to a String cannot fail.
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.separate();
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }
}

impl FieldWriter {
    fn separate(&mut self) {
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
    }
}
