//! The hub itself: a bounded buffer of recent lines per app and a fan-out of
//! live lines to followers.
//!
//! # Guarantees
//! - [`LogHub::publish`] never blocks on a follower and never awaits: it takes
//!   one std mutex for the time it takes to copy the line into the app's ring
//!   buffer and into each matching follower's queue.
//! - Per app, every follower sees lines in the order they were published,
//!   and a follower asking for recent lines gets them followed by the live
//!   ones with no line missing or repeated in between (both are taken under
//!   the same lock).
//! - A follower that does not keep up loses lines, never more than its own:
//!   its queue holds at most [`HubConfig::follower_buffer`] lines, further
//!   lines are counted and, once it has room again, replaced by one marker
//!   line (source [`SOURCE_LOGGREGATOR`]) saying how many were dropped.
//! - A dropped [`Follower`] is removed from the hub at once.
//!
//! # Caveats
//! The hub keeps the recent buffer of every log guid it has seen until it is
//! dropped; apps are not forgotten when they are deleted.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use futures::Stream;
use lattice_models::log::{LogMessage, MessageType};
// The filters and names are the hub API's wire types, shared with the client.
pub use lattice_models::log::{FollowOptions, LogFilter, DEBUG_LOG_GUID, SOURCE_LOGGREGATOR};

pub use crate::debug::TracingLayer;
use crate::disk::DiskConfig;

/// Sizes of the hub's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// Lines kept per log guid for followers that ask for recent lines.
    pub recent_per_app: usize,
    /// Lines queued per follower before it starts losing them.
    pub follower_buffer: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            recent_per_app: 1000,
            follower_buffer: 1024,
        }
    }
}

/// The counter of log lines lost, by `reason`: `slow_follower` (a
/// follower's queue was full), `forward_queue_full` (a cell's or router's
/// queue to a hub was full or stopped), `refused` (a hub refused a batch),
/// `shutdown` (not sent before the forwarder stopped).
pub const LOG_LINES_DROPPED: &str = "lattice_log_lines_dropped_total";

/// The marker a follower receives in place of the lines it was too slow for.
pub fn drop_marker(log_guid: &str, dropped: u64) -> LogMessage {
    LogMessage {
        log_guid: log_guid.to_string(),
        source_type: SOURCE_LOGGREGATOR.to_string(),
        source_instance: String::new(),
        message: format!("{dropped} log lines were dropped: this follower was too slow"),
        message_type: MessageType::Err,
        timestamp: lattice_models::unix_nanos(SystemTime::now()),
    }
}

/// Recent lines and live followers of every app. Share it as an `Arc`.
pub struct LogHub {
    shared: Arc<Shared>,
}

struct Shared {
    config: HubConfig,
    /// A std mutex, not tokio's: it is never held across an `.await`, and
    /// `publish` must be callable from synchronous code (a `LogSink`, a
    /// tracing layer) without a runtime. Nothing may log while holding it:
    /// the debug-log layer publishes through it and would deadlock.
    apps: Mutex<HashMap<String, App>>,
    next_follower_id: AtomicU64,
    /// The disk writer's channel, once [`LogHub::keep_on_disk`] was called.
    disk: OnceLock<SyncSender<LogMessage>>,
}

#[derive(Default)]
struct App {
    recent: VecDeque<LogMessage>,
    followers: Vec<Subscription>,
}

/// The hub's end of one follower.
struct Subscription {
    id: u64,
    filter: LogFilter,
    queue: Arc<Queue>,
}

impl Drop for Subscription {
    /// The hub forgets this follower (the hub is dropped, or the follower
    /// went away): a follower still reading sees its stream end.
    fn drop(&mut self) {
        let waker = {
            let mut state = self.queue.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// One follower's bounded queue of live lines, shared by the hub (which
/// pushes) and the [`Follower`] (which pops).
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<LogMessage>,
    /// Lines lost since the last one queued; becomes a marker line.
    dropped: u64,
    /// The follower's task, waiting for a line.
    waker: Option<Waker>,
    /// The hub let go of this queue: no line will come any more.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every change to the state is a single push, pop or assignment, so a
        // panic elsewhere while the lock was held cannot leave it half-made.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message` (preceded by a drop marker if lines were lost), or
    /// counts it as dropped when that would exceed `capacity`. Returns the
    /// waker to wake once the caller has released its locks.
    fn push(&self, message: LogMessage, capacity: usize) -> Option<Waker> {
        let mut state = self.lock();
        let needed = if state.dropped > 0 { 2 } else { 1 };
        if state.lines.len() + needed > capacity {
            state.dropped += 1;
            metrics::counter!(LOG_LINES_DROPPED, "reason" => "slow_follower").increment(1);
            return None;
        }
        if state.dropped > 0 {
            let marker = drop_marker(&message.log_guid, state.dropped);
            state.lines.push_back(marker);
            state.dropped = 0;
        }
        state.lines.push_back(message);
        state.waker.take()
    }
}

impl Default for LogHub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl LogHub {
    pub fn new(config: HubConfig) -> LogHub {
        LogHub {
            shared: Arc::new(Shared {
                config,
                apps: Mutex::new(HashMap::new()),
                next_follower_id: AtomicU64::new(0),
                disk: OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> HubConfig {
        self.shared.config
    }

    /// Keeps `message` in its app's recent buffer and hands it to the app's
    /// followers whose filter it matches. See the module's guarantees.
    pub fn publish(&self, message: LogMessage) {
        metrics::counter!("lattice_log_lines_total").increment(1);
        let config = self.shared.config;
        let mut wakers = Vec::new();
        // The server's own events stay in memory: they are on stderr too, and
        // the disk writer's own events must not feed it.
        let to_disk = self
            .shared
            .disk
            .get()
            .filter(|_| message.log_guid != DEBUG_LOG_GUID)
            .map(|disk| (disk, message.clone()));
        {
            let mut apps = self.shared.lock();
            // Look up before inserting, so that the common case (a known app)
            // does not allocate a key.
            let app = match apps.get_mut(&message.log_guid) {
                Some(app) => app,
                None => apps.entry(message.log_guid.clone()).or_default(),
            };
            for follower in &app.followers {
                if follower.filter.matches(&message) {
                    wakers.extend(follower.queue.push(message.clone(), config.follower_buffer));
                }
            }
            if config.recent_per_app > 0 {
                if app.recent.len() >= config.recent_per_app {
                    app.recent.pop_front();
                }
                app.recent.push_back(message);
            }
        }
        // Woken outside the locks: a waker may run code of its own.
        for waker in wakers {
            waker.wake();
        }
        if let Some((disk, message)) = to_disk {
            // Full (the disk is slower than the lines): the line is still in
            // memory; only its disk copy is lost. Gone: nothing to keep.
            let _ = disk.try_send(message);
        }
    }

    /// Keeps every app's recent lines in `config.dir` as well, from now on,
    /// and first takes back the lines kept there by an earlier run (before
    /// any line this hub already holds). See [`crate::disk`].
    ///
    /// # Errors
    /// The directory cannot be created or read, the writer thread cannot
    /// start, or the hub keeps its lines on disk already.
    pub fn keep_on_disk(&self, config: DiskConfig) -> std::io::Result<()> {
        if self.shared.disk.get().is_some() {
            return Err(std::io::Error::other(
                "the log hub keeps its lines on disk already",
            ));
        }
        std::fs::create_dir_all(&config.dir)?;
        let keep = self.shared.config.recent_per_app;
        let loaded = crate::disk::load(&config.dir, keep)?;
        {
            let mut apps = self.shared.lock();
            for (log_guid, lines) in loaded {
                let app = apps.entry(log_guid).or_default();
                let newer = std::mem::take(&mut app.recent);
                app.recent = lines.into_iter().chain(newer).collect();
                while app.recent.len() > keep {
                    app.recent.pop_front();
                }
            }
        }
        let sender = crate::disk::start_writer(config)?;
        self.shared
            .disk
            .set(sender)
            .map_err(|_| std::io::Error::other("the log hub keeps its lines on disk already"))
    }

    /// The recent lines of `log_guid` that match `filter`, oldest first.
    pub fn recent(&self, log_guid: &str, filter: &LogFilter) -> Vec<LogMessage> {
        let apps = self.shared.lock();
        apps.get(log_guid)
            .map(|app| {
                app.recent
                    .iter()
                    .filter(|m| filter.matches(m))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Follows `log_guid`: the recent lines first (if asked for), then every
    /// line published from now on, both filtered.
    ///
    /// # Guarantees
    /// The follower is registered when this returns: every line published
    /// afterwards reaches it (or is counted in a drop marker).
    pub fn follow(&self, log_guid: &str, options: FollowOptions) -> Follower {
        let filter = options.filter();
        let id = self.shared.next_follower_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
        });
        let mut apps = self.shared.lock();
        let app = apps.entry(log_guid.to_string()).or_default();
        let recent = if options.recent {
            app.recent
                .iter()
                .filter(|m| filter.matches(m))
                .cloned()
                .collect()
        } else {
            VecDeque::new()
        };
        app.followers.push(Subscription {
            id,
            filter,
            queue: queue.clone(),
        });
        Follower {
            log_guid: log_guid.to_string(),
            id,
            recent,
            queue,
            hub: Arc::downgrade(&self.shared),
        }
    }

    /// How many followers `log_guid` has now.
    pub fn follower_count(&self, log_guid: &str) -> usize {
        self.shared
            .lock()
            .get(log_guid)
            .map_or(0, |app| app.followers.len())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, App>> {
        // Each change under this lock is a push, pop or removal that leaves
        // the map consistent even if a panic interrupted the caller after it.
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live view of one app's lines: a [`Stream`] of the recent lines asked
/// for, then of live ones, with a drop marker where lines were lost. It ends
/// only when the hub is dropped; dropping it unregisters it.
pub struct Follower {
    log_guid: String,
    id: u64,
    recent: VecDeque<LogMessage>,
    queue: Arc<Queue>,
    /// Weak, so that a follower kept alive somewhere does not keep the hub.
    hub: Weak<Shared>,
}

impl Follower {
    pub fn log_guid(&self) -> &str {
        &self.log_guid
    }
}

impl Stream for Follower {
    type Item = LogMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogMessage>> {
        if let Some(message) = self.recent.pop_front() {
            return Poll::Ready(Some(message));
        }
        let mut state = self.queue.lock();
        if let Some(message) = state.lines.pop_front() {
            return Poll::Ready(Some(message));
        }
        if state.dropped > 0 {
            // Caught up after losing lines: the lost ones came after every
            // line that was queued, so the marker goes here.
            let dropped = std::mem::take(&mut state.dropped);
            return Poll::Ready(Some(drop_marker(&self.log_guid, dropped)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        // The subscription is dropped after the hub's lock is released, to
        // keep that lock as short as `publish` needs it to be.
        let removed = {
            let mut apps = hub.lock();
            let Some(app) = apps.get_mut(&self.log_guid) else {
                return;
            };
            let removed = app
                .followers
                .iter()
                .position(|s| s.id == self.id)
                .map(|i| app.followers.swap_remove(i));
            // An app nobody publishes to and nobody follows (a follow of a
            // mistyped guid) must not stay in the map forever.
            if app.followers.is_empty() && app.recent.is_empty() {
                apps.remove(&self.log_guid);
            }
            removed
        };
        drop(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    fn line(guid: &str, source: &str, instance: &str, text: &str) -> LogMessage {
        LogMessage {
            log_guid: guid.into(),
            source_type: source.into(),
            source_instance: instance.into(),
            message: text.into(),
            message_type: MessageType::Out,
            timestamp: 1,
        }
    }

    fn app(text: &str) -> LogMessage {
        line("app", "APP", "0", text)
    }

    fn texts(messages: &[LogMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.message.as_str()).collect()
    }

    /// Everything the follower holds now, without waiting for more.
    fn drain(follower: &mut Follower) -> Vec<LogMessage> {
        let mut out = Vec::new();
        while let Some(Some(message)) = follower.next().now_or_never() {
            out.push(message);
        }
        out
    }

    #[test]
    fn recent_buffer_is_bounded_per_app() {
        let hub = LogHub::new(HubConfig {
            recent_per_app: 3,
            follower_buffer: 8,
        });
        for i in 0..5 {
            hub.publish(app(&i.to_string()));
        }
        hub.publish(line("other", "APP", "0", "x"));
        let all = LogFilter::default();
        assert_eq!(texts(&hub.recent("app", &all)), ["2", "3", "4"]);
        assert_eq!(texts(&hub.recent("other", &all)), ["x"]);
        assert!(hub.recent("nobody", &all).is_empty());
    }

    #[test]
    fn no_recent_buffer_when_configured_off() {
        let hub = LogHub::new(HubConfig {
            recent_per_app: 0,
            follower_buffer: 8,
        });
        hub.publish(app("a"));
        assert!(hub.recent("app", &LogFilter::default()).is_empty());
    }

    #[test]
    fn filters_apply_to_recent_and_live_lines() {
        let hub = LogHub::default();
        hub.publish(line("app", "APP", "0", "app0"));
        hub.publish(line("app", "APP", "1", "app1"));
        hub.publish(line("app", "CELL", "1", "cell1"));
        let by_source = LogFilter {
            source: Some("APP".into()),
            instance: None,
        };
        let by_both = LogFilter {
            source: Some("CELL".into()),
            instance: Some("1".into()),
        };
        assert_eq!(texts(&hub.recent("app", &by_source)), ["app0", "app1"]);
        assert_eq!(texts(&hub.recent("app", &by_both)), ["cell1"]);

        let mut follower = hub.follow(
            "app",
            FollowOptions {
                recent: true,
                source: None,
                instance: Some("1".into()),
            },
        );
        hub.publish(line("app", "APP", "0", "live0"));
        hub.publish(line("app", "HEALTH", "1", "live1"));
        hub.publish(line("other", "APP", "1", "other app"));
        assert_eq!(texts(&drain(&mut follower)), ["app1", "cell1", "live1"]);
    }

    #[test]
    fn recent_then_live_without_gap_or_repeat() {
        let hub = LogHub::default();
        hub.publish(app("1"));
        hub.publish(app("2"));
        let mut with_recent = hub.follow(
            "app",
            FollowOptions {
                recent: true,
                ..FollowOptions::default()
            },
        );
        let mut live_only = hub.follow("app", FollowOptions::default());
        hub.publish(app("3"));
        assert_eq!(texts(&drain(&mut with_recent)), ["1", "2", "3"]);
        assert_eq!(texts(&drain(&mut live_only)), ["3"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn order_per_app_is_kept_with_concurrent_producers() {
        let hub = Arc::new(LogHub::new(HubConfig {
            recent_per_app: 10,
            follower_buffer: 100_000,
        }));
        let follower = hub.follow("app", FollowOptions::default());
        let producers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|producer| {
                let hub = hub.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..5_000u32 {
                        hub.publish(line("app", producer, "0", &i.to_string()));
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await.expect("producer panicked");
        }
        let received: Vec<LogMessage> = follower.take(10_000).collect().await;
        // Each producer's lines arrive in the order it published them, and
        // the follower saw the same interleaving the recent buffer kept.
        for producer in ["a", "b"] {
            let numbers: Vec<u32> = received
                .iter()
                .filter(|m| m.source_type == producer)
                .map(|m| m.message.parse().expect("we published numbers"))
                .collect();
            assert_eq!(numbers, (0..5_000).collect::<Vec<_>>());
        }
        assert_eq!(
            hub.recent("app", &LogFilter::default()),
            received[received.len() - 10..]
        );
    }

    #[test]
    fn a_follower_that_never_reads_blocks_nobody_and_learns_what_it_lost() {
        let hub = LogHub::new(HubConfig {
            recent_per_app: 10,
            follower_buffer: 4,
        });
        let mut stalled = hub.follow("app", FollowOptions::default());
        let mut reader = hub.follow("app", FollowOptions::default());
        let mut read = Vec::new();
        for i in 0..10 {
            // publish returns although `stalled` reads nothing.
            hub.publish(app(&i.to_string()));
            read.extend(drain(&mut reader));
        }
        assert_eq!(
            texts(&read),
            (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
        );

        let got = drain(&mut stalled);
        assert_eq!(texts(&got[..4]), ["0", "1", "2", "3"]);
        assert_eq!(got.len(), 5, "four queued lines and one marker: {got:?}");
        assert_eq!(got[4].source_type, SOURCE_LOGGREGATOR);
        assert_eq!(
            got[4].message,
            "6 log lines were dropped: this follower was too slow"
        );
        assert_eq!(got[4].log_guid, "app");

        // Caught up: it gets new lines again, and no second marker.
        hub.publish(app("10"));
        assert_eq!(texts(&drain(&mut stalled)), ["10"]);
    }

    #[test]
    fn the_marker_sits_where_lines_were_lost() {
        let hub = LogHub::new(HubConfig {
            recent_per_app: 10,
            follower_buffer: 3,
        });
        let mut follower = hub.follow("app", FollowOptions::default());
        for text in ["a", "b", "c", "lost1", "lost2"] {
            hub.publish(app(text));
        }
        // It reads two lines: room for the marker and one more line.
        let first: Vec<_> = drain_n(&mut follower, 2);
        assert_eq!(texts(&first), ["a", "b"]);
        hub.publish(app("d"));
        let rest = drain(&mut follower);
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert_eq!(rest[0].message, "c");
        assert!(rest[1].message.starts_with("2 log lines were dropped"));
        assert_eq!(rest[2].message, "d");
    }

    fn drain_n(follower: &mut Follower, n: usize) -> Vec<LogMessage> {
        (0..n)
            .map(|_| {
                follower
                    .next()
                    .now_or_never()
                    .flatten()
                    .expect("a line is queued")
            })
            .collect()
    }

    #[test]
    fn followers_that_went_away_are_removed() {
        let hub = LogHub::default();
        let first = hub.follow("app", FollowOptions::default());
        let second = hub.follow("app", FollowOptions::default());
        assert_eq!(hub.follower_count("app"), 2);
        drop(first);
        assert_eq!(hub.follower_count("app"), 1);
        hub.publish(app("still delivered"));
        drop(second);
        assert_eq!(hub.follower_count("app"), 0);
        // The app's recent lines stay; a followed guid with none does not.
        assert_eq!(hub.recent("app", &LogFilter::default()).len(), 1);
        drop(hub.follow("typo", FollowOptions::default()));
        assert!(!hub.shared.lock().contains_key("typo"));
    }

    #[tokio::test]
    async fn a_waiting_follower_is_woken_and_ends_with_the_hub() {
        let hub = LogHub::default();
        let mut follower = hub.follow("app", FollowOptions::default());
        let reader = tokio::spawn(async move {
            let first = follower.next().await;
            let end = follower.next().await;
            (first, end)
        });
        // Let the reader park on an empty queue first.
        tokio::task::yield_now().await;
        hub.publish(app("wake up"));
        drop(hub);
        let (first, end) = reader.await.expect("reader panicked");
        assert_eq!(first.map(|m| m.message).as_deref(), Some("wake up"));
        assert_eq!(end, None);
    }

    /// Regression (issue 15, item 8): the hub lost every line on restart.
    #[test]
    fn recent_lines_kept_on_disk_come_back_in_a_new_hub() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DiskConfig::new(dir.path().join("logs"));
        let hub = LogHub::new(HubConfig {
            recent_per_app: 2,
            follower_buffer: 8,
        });
        hub.keep_on_disk(config.clone()).expect("keep on disk");
        for text in ["one", "two", "three"] {
            hub.publish(app(text));
        }
        hub.publish(line(DEBUG_LOG_GUID, "DBG", "", "server event"));
        // The writer thread appends behind `publish`: wait for the file.
        let file = crate::disk::file_of(&config.dir, "app");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_to_string(&file).map_or(true, |contents| contents.lines().count() < 3) {
            assert!(
                std::time::Instant::now() < deadline,
                "lines never reached the disk"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(hub);

        let restarted = LogHub::new(HubConfig {
            recent_per_app: 2,
            follower_buffer: 8,
        });
        restarted.publish(app("four"));
        restarted
            .keep_on_disk(config.clone())
            .expect("keep on disk");
        // The disk's lines come first, then this run's, bounded as ever.
        let recent = restarted.recent("app", &LogFilter::default());
        assert_eq!(texts(&recent), ["three", "four"]);
        assert!(restarted
            .recent(DEBUG_LOG_GUID, &LogFilter::default())
            .is_empty());
        assert!(!crate::disk::file_of(&config.dir, DEBUG_LOG_GUID).exists());
        assert!(restarted.keep_on_disk(config).is_err(), "twice is refused");
    }
}
