//! The server's own logs as log lines (`ltc debug-logs`): a tracing layer
//! that turns every event into a [`LogMessage`] under [`DEBUG_LOG_GUID`].
//!
//! The line's `message` is the event as one JSON object (the `--raw` form):
//! timestamp, level, target, the event's fields in the order they were
//! written, and the fields of the spans it happened in. [`render`] turns it
//! into the human form, `LEVEL message key=value ...`, when it is read; one
//! stored form serves both.
//!
//! # Guarantees
//! The layer never recurses: an event emitted while the layer is handing a
//! line to its sink (the sink logging a warning, say) is skipped on that
//! thread, so a sink that logs cannot loop or deadlock on its own lock.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use lattice_executor::LogSink;
use lattice_models::log::{LogMessage, MessageType};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::hub::DEBUG_LOG_GUID;

/// A tracing layer that sends the server's events to a [`LogSink`] (a
/// `HubSink` in the process that runs the hub, a `RemoteSink` on a cell of
/// another machine).
///
/// # Assumptions
/// Installed on a subscriber built from `tracing_subscriber::registry()`
/// (span fields are kept in its extensions). Which levels and targets reach
/// it is the subscriber's filter's business: give it a per-layer filter
/// (`.with_filter(LevelFilter::INFO)`) to keep TRACE noise out.
pub struct TracingLayer {
    sink: Arc<dyn LogSink>,
    instance: String,
}

impl TracingLayer {
    pub fn new(sink: Arc<dyn LogSink>) -> TracingLayer {
        TracingLayer {
            sink,
            instance: String::new(),
        }
    }

    /// Tags every line with `instance` (`source_instance`), e.g. the cell id
    /// of a machine whose debug logs go to a hub elsewhere.
    pub fn with_instance(self, instance: impl Into<String>) -> TracingLayer {
        TracingLayer {
            instance: instance.into(),
            ..self
        }
    }
}

thread_local! {
    /// Set while this thread is inside [`TracingLayer::on_event`].
    static IN_LAYER: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_LAYER`] when dropped, also when the sink panics.
struct Reentrancy;

impl Reentrancy {
    /// `None` if this thread is already inside the layer.
    fn enter() -> Option<Reentrancy> {
        if IN_LAYER.with(|flag| flag.replace(true)) {
            None
        } else {
            Some(Reentrancy)
        }
    }
}

impl Drop for Reentrancy {
    fn drop(&mut self) {
        IN_LAYER.with(|flag| flag.set(false));
    }
}

/// The fields of a span, kept in its extensions until its events need them.
struct SpanFields(Fields);

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(SpanFields(fields)) => values.record(fields),
            None => {
                let mut fields = Fields::default();
                values.record(&mut fields);
                extensions.insert(SpanFields(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(_guard) = Reentrancy::enter() else {
            return;
        };
        let now = SystemTime::now();
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| SpanLine {
                        name: span.name().to_string(),
                        fields: span
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = DebugLine {
            timestamp: humantime::format_rfc3339_nanos(now).to_string(),
            level: metadata.level().to_string(),
            target: metadata.target().to_string(),
            fields,
            spans,
        };
        let message_type = if *metadata.level() <= Level::WARN {
            MessageType::Err
        } else {
            MessageType::Out
        };
        self.sink.emit(LogMessage {
            log_guid: DEBUG_LOG_GUID.to_string(),
            source_type: source_of(metadata.target()),
            source_instance: self.instance.clone(),
            // Serialising strings and JSON values into a String cannot fail.
            message: serde_json::to_string(&line).expect("a debug line is always serialisable"),
            message_type,
            timestamp: lattice_models::unix_nanos(now),
        });
    }
}

/// The component a target belongs to: its crate, without our `lattice_`
/// prefix (`lattice_receptor::tasks` -> `receptor`, `hyper::proto` ->
/// `hyper`).
pub fn source_of(target: &str) -> String {
    let krate = target.split("::").next().unwrap_or(target);
    krate.strip_prefix("lattice_").unwrap_or(krate).to_string()
}

/// One debug line, as stored in the message (the `--raw` form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugLine {
    /// RFC 3339, UTC, nanoseconds.
    pub timestamp: String,
    pub level: String,
    /// The module path the event came from.
    pub target: String,
    /// The event's fields; the text of the event is the `message` field.
    pub fields: Fields,
    /// The spans the event happened in, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<SpanLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLine {
    pub name: String,
    pub fields: Fields,
}

/// Fields in the order they were recorded (a JSON object on the wire; a
/// `serde_json::Map` would sort them, and `message` first, then the fields
/// in the order the code wrote them, reads best).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, field: &Field, value: Value) {
        let name = field.name();
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain: the top error alone rarely says enough.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.set(field, Value::String(text));
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// The human form of a stored debug line: `LEVEL message key=value ...`,
/// event fields first, then span fields. A message that is not a debug line
/// (one ingested from elsewhere) is returned as it is.
pub fn render(raw: &str) -> String {
    let Ok(line) = serde_json::from_str::<DebugLine>(raw) else {
        return raw.to_string();
    };
    let mut out = line.level;
    let span_fields = line.spans.iter().flat_map(|s| s.fields.0.iter());
    let mut message_written = false;
    for (name, value) in line.fields.0.iter().chain(span_fields) {
        out.push(' ');
        if name == "message" && !message_written {
            message_written = true;
            out.push_str(&plain(value));
            continue;
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&quoted(value));
    }
    out
}

/// A value as text, strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as text, quoted when it would not read as one token.
fn quoted(value: &Value) -> String {
    match value {
        Value::String(s)
            if s.is_empty()
                || s.chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
        {
            format!("{s:?}")
        }
        other => plain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{LogFilter, LogHub};
    use crate::sink::HubSink;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn captures_events_with_fields_and_spans() {
        let hub = Arc::new(LogHub::default());
        let subscriber = tracing_subscriber::registry()
            .with(TracingLayer::new(Arc::new(HubSink::new(hub.clone()))).with_instance("cell-1"));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", task_guid = "t-1");
            let _entered = span.enter();
            tracing::warn!(
                memory_mb = 128,
                path = "/a b",
                ok = true,
                "placed {} of {}",
                1,
                2
            );
            tracing::info!(empty = "", "plain");
        });
        let lines = hub.recent(DEBUG_LOG_GUID, &LogFilter::default());
        assert_eq!(lines.len(), 2, "{lines:?}");
        let warn = &lines[0];
        assert_eq!(warn.log_guid, DEBUG_LOG_GUID);
        assert_eq!(warn.source_type, "logs");
        assert_eq!(warn.source_instance, "cell-1");
        assert_eq!(warn.message_type, MessageType::Err);
        assert_eq!(lines[1].message_type, MessageType::Out);

        let raw: Value = serde_json::from_str(&warn.message).expect("the raw form is JSON");
        assert_eq!(raw["level"], "WARN");
        assert_eq!(raw["target"], "lattice_logs::debug::tests");
        assert_eq!(raw["fields"]["message"], "placed 1 of 2");
        assert_eq!(raw["fields"]["memory_mb"], 128);
        assert_eq!(raw["spans"][0]["name"], "run");
        assert_eq!(raw["spans"][0]["fields"]["task_guid"], "t-1");
        humantime::parse_rfc3339(raw["timestamp"].as_str().expect("a string"))
            .expect("an RFC 3339 timestamp");

        assert_eq!(
            render(&warn.message),
            r#"WARN placed 1 of 2 memory_mb=128 path="/a b" ok=true task_guid=t-1"#
        );
        assert_eq!(
            render(&lines[1].message),
            r#"INFO plain empty="" task_guid=t-1"#
        );
    }

    #[test]
    fn span_fields_recorded_later_are_kept() {
        let hub = Arc::new(LogHub::default());
        let subscriber = tracing_subscriber::registry()
            .with(TracingLayer::new(Arc::new(HubSink::new(hub.clone()))));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("lrp", index = tracing::field::Empty);
            span.record("index", 3);
            span.in_scope(|| tracing::info!("started"));
        });
        let lines = hub.recent(DEBUG_LOG_GUID, &LogFilter::default());
        assert_eq!(render(&lines[0].message), "INFO started index=3");
    }

    #[test]
    fn sources_are_crates_without_our_prefix() {
        assert_eq!(source_of("lattice_receptor::tasks"), "receptor");
        assert_eq!(source_of("lattice_rep"), "rep");
        assert_eq!(source_of("lattice::app"), "lattice");
        assert_eq!(source_of("hyper::proto::h1"), "hyper");
    }

    #[test]
    fn render_leaves_other_lines_alone() {
        assert_eq!(render("not json"), "not json");
        assert_eq!(render(r#"{"a":1}"#), r#"{"a":1}"#);
    }

    #[test]
    fn fields_keep_their_order_through_json() {
        let fields = Fields(vec![
            ("z".into(), Value::from(1)),
            ("a".into(), Value::from("x")),
        ]);
        let json = serde_json::to_string(&fields).expect("serialisable");
        assert_eq!(json, r#"{"z":1,"a":"x"}"#);
        let back: Fields = serde_json::from_str(&json).expect("what we wrote");
        assert_eq!(back, fields);
    }
}
