//! The store's RPC surface, derived from one list of operations.
//!
//! [`store_operations!`] below is the only place a [`Store`] method is
//! named for the wire. From it come the [`Call`] enum (one variant per
//! method, its arguments as fields), [`Call::writes_record`], the server's
//! [`dispatch`] (used by [`crate::http`]) and the client's `impl Store for
//! RemoteStore` (in [`crate::remote`]). Adding a method to the trait and a
//! line to the list is all it takes to serve it.
//!
//! This module holds no transport: the wire types here are plain serde
//! types shared by the server (axum) and the client (reqwest).

use std::time::Duration;

use lattice_models::{ActualLrp, CellPresence, DesiredLrp, Event, ModificationTag, Task};
use serde::{Deserialize, Serialize};

use crate::{
    ActualLrpFilter, ActualLrpSummary, DesiredLrpFilter, DesiredLrpSummary, RecordKind, Store,
    StoreError, StoreResult, TaskFilter,
};

/// Where the store's methods are served; `{PREFIX}/{method}`.
pub const PREFIX: &str = "/internal/v1/store";
/// Where the change feed is served.
pub const EVENTS_PATH: &str = "/internal/v1/store/events";
/// The media type of the change feed.
#[cfg(feature = "http")]
pub const NDJSON: &str = "application/x-ndjson";
/// How often an idle feed stream sends a `ping` line.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

// --- the list of operations --------------------------------------------------

/// The wire type of an argument passed as `ref T` (the trait takes `&T`,
/// the wire carries `T::Owned`) or `val T` (taken and carried as `T`).
macro_rules! wire_type {
    (ref $ty:ty) => {
        <$ty as ToOwned>::Owned
    };
    (val $ty:ty) => {
        $ty
    };
}

/// A wire field handed to the trait (server side).
#[cfg(feature = "http")]
macro_rules! from_wire {
    (ref $arg:ident) => {
        ::std::borrow::Borrow::borrow(&$arg)
    };
    (val $arg:ident) => {
        $arg
    };
}

/// Whether a kind of operation writes a task or LRP (see
/// [`Call::writes_record`]).
macro_rules! writes_record {
    (write) => {
        true
    };
    (read) => {
        false
    };
    (list) => {
        false
    };
}

/// How the client sends a kind of operation: lists decode item by item.
#[cfg(feature = "remote")]
macro_rules! client_call {
    (list, $inner:expr, $call:expr) => {
        $inner.call_list($call).await
    };
    ($kind:ident, $inner:expr, $call:expr) => {
        $inner.call($call).await
    };
}

/// Builds `impl Store for RemoteStore` from the list: each parameter is
/// resolved to the trait's type (`&T` or `T`) before the impl is emitted,
/// because `#[async_trait]` must see every `&` to give it a lifetime.
#[cfg(feature = "remote")]
macro_rules! remote_store {
    // The next method: resolve its parameters.
    (@methods [$($done:tt)*]
        $kind:ident $variant:ident $method:ident ( $($args:tt)* ) -> $ret:ty;
        $($rest:tt)*
    ) => {
        remote_store! {
            @params [$($done)*] [$kind $variant $method $ret] [] [] $($args)* ; $($rest)*
        }
    };
    // Every method resolved: the impl.
    (@methods [$($done:tt)*]) => {
        #[async_trait::async_trait]
        impl Store for crate::remote::RemoteStore {
            $($done)*

            fn subscribe(&self) -> crate::EventReceiver {
                self.subscribe_feed()
            }
        }
    };
    (@params $done:tt $head:tt [$($params:tt)*] [$($fields:tt)*]
        $arg:ident : ref $ty:ty, $($more:tt)*
    ) => {
        remote_store! {
            @params $done $head [$($params)* $arg: &$ty,] [$($fields)* $arg: $arg.to_owned(),]
            $($more)*
        }
    };
    (@params $done:tt $head:tt [$($params:tt)*] [$($fields:tt)*]
        $arg:ident : val $ty:ty, $($more:tt)*
    ) => {
        remote_store! {
            @params $done $head [$($params)* $arg: $ty,] [$($fields)* $arg,]
            $($more)*
        }
    };
    (@params [$($done:tt)*] [$kind:ident $variant:ident $method:ident $ret:ty]
        [$($params:tt)*] [$($fields:tt)*] ; $($rest:tt)*
    ) => {
        remote_store! {
            @methods [
                $($done)*
                async fn $method(&self, $($params)*) -> StoreResult<$ret> {
                    let call = Call::$variant { $($fields)* };
                    client_call!($kind, self.inner(), call)
                }
            ]
            $($rest)*
        }
    };
}

/// Expands the list of operations into everything the wire needs. Each
/// line: the kind (`read`: a read or an idempotent write, sent again to
/// another brain after any failure; `list`: a read of a list, whose items
/// are decoded one by one; `write`: a write of a task or LRP, which
/// publishes an event), the variant name, the method and its arguments
/// (`ref` for the trait's `&T`, `val` for `T`), and what it returns.
macro_rules! store_operations {
    ($(
        $kind:ident $variant:ident $method:ident ( $( $arg:ident : $mode:ident $ty:ty ),* ) -> $ret:ty;
    )*) => {
        /// One call of a [`Store`] method: the variant is the method, the
        /// fields its arguments. Serialized adjacently tagged, so the
        /// client splits it into the path (`method`) and the body (`args`).
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "method", content = "args", rename_all = "snake_case")]
        pub(crate) enum Call {
            $( $variant { $( $arg: wire_type!($mode $ty), )* }, )*
        }

        impl Call {
            /// Whether the call writes a task or LRP (publishes an event),
            /// which is also whether sending it twice could differ from
            /// sending it once: a create or compare-and-swap sent again
            /// fails though the first landed.
            #[cfg_attr(not(feature = "remote"), allow(dead_code))]
            pub(crate) fn writes_record(&self) -> bool {
                match self {
                    $( Call::$variant { .. } => writes_record!($kind), )*
                }
            }
        }

        /// Runs `call` on `store` and encodes the [`Reply`]; a write of a
        /// task or LRP answers with the feed position `written` gives,
        /// taken after the write returned (so it covers the write's event).
        ///
        /// # Errors
        /// The store's error, for the server to send as a [`WireError`].
        #[cfg(feature = "http")]
        pub(crate) async fn dispatch(
            store: &dyn Store,
            call: Call,
            written: impl FnOnce() -> FeedPosition,
        ) -> StoreResult<Vec<u8>> {
            match call {
                $( Call::$variant { $( $arg, )* } => {
                    let result: $ret = store.$method($( from_wire!($mode $arg) ),*).await?;
                    let feed = writes_record!($kind).then(written);
                    encode_reply(&Reply { result, feed })
                } )*
            }
        }

        #[cfg(feature = "remote")]
        remote_store! {
            @methods []
            $( $kind $variant $method ( $( $arg : $mode $ty, )* ) -> $ret; )*
        }
    };
}

store_operations! {
    read UpsertDomain upsert_domain(domain: ref str, ttl: val Option<Duration>) -> ();
    read Domains domains() -> Vec<String>;
    write CreateTask create_task(task: val Task) -> Task;
    read GetTask get_task(task_guid: ref str) -> Task;
    list ListTasks list_tasks(filter: ref TaskFilter) -> Vec<Task>;
    write UpdateTask update_task(task: val Task) -> Task;
    write DeleteTask delete_task(task_guid: ref str, expected: ref ModificationTag) -> ();
    write CreateDesiredLrp create_desired_lrp(lrp: val DesiredLrp) -> DesiredLrp;
    read GetDesiredLrp get_desired_lrp(process_guid: ref str) -> DesiredLrp;
    list ListDesiredLrps list_desired_lrps(filter: ref DesiredLrpFilter) -> Vec<DesiredLrp>;
    write UpdateDesiredLrp update_desired_lrp(lrp: val DesiredLrp) -> DesiredLrp;
    write DeleteDesiredLrp delete_desired_lrp(process_guid: ref str, expected: ref ModificationTag) -> ();
    write CreateActualLrp create_actual_lrp(lrp: val ActualLrp) -> ActualLrp;
    read GetActualLrp get_actual_lrp(process_guid: ref str, index: val i64) -> ActualLrp;
    list ListActualLrps list_actual_lrps(filter: ref ActualLrpFilter) -> Vec<ActualLrp>;
    write UpdateActualLrp update_actual_lrp(lrp: val ActualLrp) -> ActualLrp;
    write DeleteActualLrp delete_actual_lrp(process_guid: ref str, index: val i64, expected: ref ModificationTag) -> ();
    list ListDesiredLrpSummaries list_desired_lrp_summaries() -> Vec<DesiredLrpSummary>;
    list ListActualLrpSummaries list_actual_lrp_summaries() -> Vec<ActualLrpSummary>;
    read UpsertCell upsert_cell(presence: val CellPresence, ttl: val Duration) -> ();
    list ListCells list_cells() -> Vec<CellPresence>;
    read RemoveCell remove_cell(cell_id: ref str) -> ();
    read AcquireLock acquire_lock(name: ref str, owner: ref str, ttl: val Duration) -> bool;
    read ReleaseLock release_lock(name: ref str, owner: ref str) -> ();
    read LockOwner lock_owner(name: ref str) -> Option<String>;
}

#[cfg(feature = "http")]
fn encode_reply<T: Serialize>(reply: &Reply<T>) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(reply)
        .map_err(|e| StoreError::Backend(format!("cannot encode a store answer: {e}")))
}

// --- answers -----------------------------------------------------------------

/// A point in one hub's numbering of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The hub (one per server, renewed when it falls behind its store).
    pub hub: String,
    /// The sequence number of the last event numbered.
    pub seq: u64,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply<T> {
    pub(crate) result: T,
    /// For writes of tasks and LRPs: the feed position that covers the
    /// write's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) feed: Option<FeedPosition>,
}

/// A failed answer: a [`StoreError`] variant with its fields (the record
/// kind as `record`), or a refusal of the request itself.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireError {
    NotFound {
        record: RecordKind,
        key: String,
    },
    AlreadyExists {
        record: RecordKind,
        key: String,
    },
    Conflict {
        record: RecordKind,
        key: String,
    },
    Corrupt {
        record: RecordKind,
        key: String,
        reason: String,
    },
    Backend {
        message: String,
    },
    /// A missing or wrong secret.
    Unauthorized {
        message: String,
    },
    /// Not a known method, or arguments that do not fit it.
    BadRequest {
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: WireError,
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, key } => WireError::NotFound { record: kind, key },
            StoreError::AlreadyExists { kind, key } => {
                WireError::AlreadyExists { record: kind, key }
            }
            StoreError::Conflict { kind, key } => WireError::Conflict { record: kind, key },
            StoreError::Corrupt { kind, key, reason } => WireError::Corrupt {
                record: kind,
                key,
                reason,
            },
            StoreError::Backend(message) => WireError::Backend { message },
        }
    }
}

/// One line of the change feed stream.
// Lines are decoded one at a time and handed on: boxing the event would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FeedLine {
    /// First line: which hub numbers the events, the number of the last
    /// event before the stream's first, and whether that continues the
    /// position the client asked for.
    Hello {
        hub: String,
        seq: u64,
        resumed: bool,
    },
    Event {
        seq: u64,
        event: Event,
    },
    /// Nothing happened; the connection is alive.
    Ping {},
    /// An event line this follower could not decode; never sent, made by
    /// the follower so that it can skip the event and keep its position.
    #[serde(skip)]
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Unreadable {
        seq: u64,
        reason: String,
    },
}

/// The query of the feed stream.
#[cfg(feature = "http")]
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct FeedQuery {
    pub(crate) hub: Option<String>,
    pub(crate) after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_split_into_method_and_arguments() {
        let call = Call::GetActualLrp {
            process_guid: "web".into(),
            index: 3,
        };
        let value = serde_json::to_value(&call).expect("serializable");
        assert_eq!(value["method"], "get_actual_lrp");
        assert_eq!(value["args"]["process_guid"], "web");
        assert_eq!(value["args"]["index"], 3);
        let value = serde_json::to_value(Call::ListCells {}).expect("serializable");
        assert_eq!(value["method"], "list_cells");
        assert!(value["args"].is_object(), "arguments are always an object");
    }

    #[test]
    fn only_record_writes_are_marked_as_writes() {
        assert!(Call::DeleteTask {
            task_guid: "t".into(),
            expected: ModificationTag::default(),
        }
        .writes_record());
        assert!(!Call::AcquireLock {
            name: "l".into(),
            owner: "o".into(),
            ttl: Duration::from_secs(1),
        }
        .writes_record());
        assert!(!Call::GetTask {
            task_guid: "t".into()
        }
        .writes_record());
    }

    #[test]
    fn filters_travel_with_every_field() {
        let filter = ActualLrpFilter {
            process_guid: Some("web".into()),
            domain: None,
            cell_id: Some("cell-1".into()),
            state: Some(lattice_models::ActualLrpState::Unclaimed),
        };
        let value = serde_json::to_value(Call::ListActualLrps {
            filter: filter.clone(),
        })
        .expect("serializable");
        assert_eq!(value["args"]["filter"]["state"], "UNCLAIMED");
        let back: Call = serde_json::from_value(value).expect("deserializable");
        match back {
            Call::ListActualLrps { filter: back } => assert_eq!(back, filter),
            other => panic!("{other:?}"),
        }
        // An older client's filter, without the newer fields, still reads.
        let old: ActualLrpFilter =
            serde_json::from_str(r#"{"process_guid":"web"}"#).expect("deserializable");
        assert_eq!(old.state, None);
    }
}
