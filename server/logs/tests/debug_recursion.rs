//! The tracing layer must not recurse when its sink logs. This needs the
//! *global* subscriber: tracing-core already swallows events nested inside a
//! scoped (`with_default`) dispatch, but not inside the global one, which is
//! what the server installs. Hence a test binary of its own.

use std::sync::{Arc, Mutex};

use lattice_executor::LogSink;
use lattice_logs::debug::render;
use lattice_logs::hub::TracingLayer;
use lattice_models::log::LogMessage;
use tracing_subscriber::layer::SubscriberExt;

/// A sink that logs on every line, as a sink warning about drops would.
struct LoggingSink(Mutex<Vec<LogMessage>>);

impl LogSink for LoggingSink {
    fn emit(&self, message: LogMessage) {
        tracing::warn!("the sink itself logs");
        self.0
            .lock()
            .expect("not poisoned: nothing panics")
            .push(message);
    }
}

#[test]
fn a_sink_that_logs_does_not_recurse() {
    let sink = Arc::new(LoggingSink(Mutex::new(Vec::new())));
    let subscriber = tracing_subscriber::registry().with(TracingLayer::new(sink.clone()));
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only test of this binary sets the global subscriber");
    tracing::info!("one");
    tracing::info!("two");
    let got = sink.0.lock().expect("not poisoned: nothing panics");
    let rendered: Vec<String> = got.iter().map(|m| render(&m.message)).collect();
    assert_eq!(rendered, ["INFO one", "INFO two"]);
}
