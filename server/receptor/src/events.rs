//! `/v1/events`: the change feed as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::AppState;

/// Streams every committed change from now on. A client too slow to keep up
/// is disconnected (rather than silently missing events) and must re-read the
/// state and reconnect; the stream also ends when the server shuts down.
#[utoipa::path(get, path = "/v1/events", tag = "events", responses((status = 200, content_type = "text/event-stream", description = "Server-Sent Events: desired_lrp_created|changed|removed, actual_lrp_created|changed|removed (Diego), task_created|changed|removed (ours); data is the JSON of the record(s)")))]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.store.subscribe();
    let shutdown = state.shutdown.clone();
    let events = BroadcastStream::new(receiver)
        .map_while(|item| match item {
            Ok(event) => Some(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "event subscriber fell behind; closing its stream");
                None
            }
        })
        .map(|event| {
            Ok(SseEvent::default()
                .event(event.name())
                .data(event.data().to_string()))
        });
    let events =
        futures::StreamExt::take_until(events, async move { shutdown.cancelled_owned().await });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
