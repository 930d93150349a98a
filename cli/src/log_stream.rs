//! Log lines for people: how a line looks ([`LineFormat`]), a follow of the
//! log hub that survives a lost connection ([`LiveLogs`]), and the app's
//! lines shown while `ltc create` and `ltc scale` wait ([`LogTail`]).
//!
//! The hub's client never reconnects by itself (see `lattice_client::LogsClient`):
//! reconnecting is ours, always without the recent lines, which the user has
//! seen already. Lines logged while the connection was down are therefore
//! not shown; a notice says so.

use std::future::Future;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use lattice_client::{ClientError, LogStream, LogsClient};
use lattice_models::log::{FollowOptions, LogFilter};
use lattice_models::log::{
    LogMessage, MessageType, SOURCE_APP, SOURCE_CELL, SOURCE_HEALTH, SOURCE_ROUTER, SOURCE_STAGING,
};
use tokio::sync::mpsc;

use crate::progress::Spinner;

/// The first pause before reconnecting; it doubles after each failed try.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(250);
/// The longest pause between two tries.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// What a reader says when its connection to the hub is gone.
pub const LOST: &str = "connection to the log stream lost; reconnecting...";

/// How log lines are shown: `11:02:03.123 [APP/0] listening on 8080`, in
/// local time, coloured by source when `color` is on.
#[derive(Debug, Clone)]
pub struct LineFormat {
    color: bool,
    time_zone: TimeZone,
    /// Mark stderr lines `ERR` when not coloured; off where the line says
    /// it already (debug lines start with their level).
    err_marker: bool,
}

// ANSI SGR sequences; a handful of fixed codes need no terminal library.
const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";

impl LineFormat {
    /// Times in the system's time zone (`TZ`, else `/etc/localtime`; UTC if
    /// neither can be read).
    pub fn new(color: bool) -> LineFormat {
        LineFormat::with_time_zone(color, TimeZone::system())
    }

    pub fn with_time_zone(color: bool, time_zone: TimeZone) -> LineFormat {
        LineFormat {
            color,
            time_zone,
            err_marker: true,
        }
    }

    /// Without the `ERR` mark (see the field).
    pub fn without_err_marker(self) -> LineFormat {
        LineFormat {
            err_marker: false,
            ..self
        }
    }

    /// One line, without a newline. Lines the process wrote to stderr are
    /// red with colours on, and marked `ERR` without them (a pipe, a log
    /// file), so that they can still be told apart.
    pub fn render(&self, message: &LogMessage) -> String {
        let time = self.time(message.timestamp);
        let tag = format!("[{}]", tag(message));
        let is_err = message.message_type == MessageType::Err;
        if !self.color {
            let marker = if is_err && self.err_marker {
                " ERR"
            } else {
                ""
            };
            return format!("{time} {tag}{marker} {}", message.message);
        }
        let tag = match source_color(&message.source_type) {
            Some(color) => format!("{color}{tag}{RESET}"),
            None => tag,
        };
        let text = if is_err {
            format!("{RED}{}{RESET}", message.message)
        } else {
            message.message.clone()
        };
        format!("{DIM}{time}{RESET} {tag} {text}")
    }

    /// `HH:MM:SS.mmm` in local time.
    fn time(&self, nanos: i64) -> String {
        Timestamp::from_nanosecond(i128::from(nanos))
            .expect("jiff's range (years -9999 to 9999) holds every i64 of nanoseconds")
            .to_zoned(self.time_zone.clone())
            .strftime("%H:%M:%S%.3f")
            .to_string()
    }
}

/// `APP/0`, or `CELL` for a line of no instance (a task's, the cell's).
fn tag(message: &LogMessage) -> String {
    if message.source_instance.is_empty() {
        message.source_type.clone()
    } else {
        format!("{}/{}", message.source_type, message.source_instance)
    }
}

/// The colour of a source's tag; other sources (a component's debug lines,
/// an action's own `log_source`) stay plain.
fn source_color(source: &str) -> Option<&'static str> {
    match source {
        SOURCE_APP => Some("\x1b[32m"),     // green
        SOURCE_STAGING => Some("\x1b[33m"), // yellow
        SOURCE_CELL => Some("\x1b[36m"),    // cyan
        SOURCE_HEALTH => Some("\x1b[35m"),  // magenta
        SOURCE_ROUTER => Some("\x1b[94m"),  // bright blue
        _ => None,
    }
}

/// What a follow reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// An app's (or task's) lines: `GET /v1/logs/{log_guid}`.
    App { log_guid: String, filter: LogFilter },
    /// The cluster's own lines: `GET /v1/debug_logs`, rendered by the
    /// server unless `raw`.
    Debug { filter: LogFilter, raw: bool },
}

/// What a follow yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Line(LogMessage),
    /// Something for the user about the stream itself (lost, back), for
    /// stderr.
    Notice(String),
}

/// A follow of the hub that reconnects (without the recent lines) when its
/// connection is lost or the server ends it, with a growing pause between
/// tries.
///
/// # Errors
/// [`LiveLogs::connect`] fails as the first request does (a wrong target or
/// password must not be retried forever); afterwards only an answer that
/// will not change by retrying (4xx) ends it.
///
/// # Assumptions
/// [`LiveLogs::next`] may be cancelled at any `.await` (it is raced against
/// Ctrl-C): the state it keeps is only the stream and the count of failed
/// tries, and a cancelled pause or try is simply made again.
pub struct LiveLogs {
    client: LogsClient,
    source: Source,
    /// `None` while reconnecting.
    stream: Option<LogStream>,
    /// Failed tries since the connection was lost.
    failures: u32,
}

impl LiveLogs {
    /// Opens the follow; `recent` asks for the lines the hub holds first.
    /// Once this returns, every line published afterwards is streamed.
    pub async fn connect(
        client: LogsClient,
        source: Source,
        recent: bool,
    ) -> Result<LiveLogs, ClientError> {
        let stream = open(&client, &source, recent).await?;
        Ok(LiveLogs {
            client,
            source,
            stream: Some(stream),
            failures: 0,
        })
    }

    /// The next line or notice; see the type's doc for errors.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        use futures::StreamExt as _;
        let Some(stream) = &mut self.stream else {
            return self.reconnect().await;
        };
        match stream.next().await {
            Some(Ok(line)) => Ok(Event::Line(line)),
            // One event this ltc cannot read (a newer server's): the stream
            // itself is fine.
            Some(Err(err @ ClientError::Decode { .. })) => Ok(Event::Notice(format!(
                "skipped a log event: {:#}",
                anyhow::Error::from(err)
            ))),
            // Cut midway, or ended by the server (it shut down, e.g. to
            // restart): either way the app goes on logging.
            Some(Err(_)) | None => {
                self.stream = None;
                Ok(Event::Notice(LOST.to_string()))
            }
        }
    }

    async fn reconnect(&mut self) -> Result<Event, ClientError> {
        loop {
            tokio::time::sleep(backoff(self.failures)).await;
            match open(&self.client, &self.source, false).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.failures = 0;
                    return Ok(Event::Notice(
                        "reconnected; lines logged while disconnected are not shown".to_string(),
                    ));
                }
                Err(err) if is_transient(&err) => {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures == 1 {
                        // Said once per outage: the pauses grow to seconds, and
                        // a line per try would bury the logs.
                        return Ok(Event::Notice(format!(
                            "cannot reconnect yet: {:#}; still trying",
                            anyhow::Error::from(err)
                        )));
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }
}

async fn open(
    client: &LogsClient,
    source: &Source,
    recent: bool,
) -> Result<LogStream, ClientError> {
    match source {
        Source::App { log_guid, filter } => {
            client
                .follow(log_guid, &follow_options(filter, recent))
                .await
        }
        Source::Debug { filter, raw } => {
            client
                .debug_follow(&follow_options(filter, recent), *raw)
                .await
        }
    }
}

fn follow_options(filter: &LogFilter, recent: bool) -> FollowOptions {
    FollowOptions {
        recent,
        source: filter.source.clone(),
        instance: filter.instance.clone(),
    }
}

/// The pause before try `failures + 1`: 250 ms, doubling, at most 5 s.
pub fn backoff(failures: u32) -> Duration {
    RECONNECT_FIRST
        .saturating_mul(2u32.saturating_pow(failures))
        .min(RECONNECT_MAX)
}

/// A failure that may heal by itself: no connection, a cut one, or a server
/// error (a proxy in front of a restarting receptor answers 502).
pub fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::Unreachable { .. } | ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } | ClientError::UnexpectedStatus { status, .. } => {
            *status >= 500
        }
        _ => false,
    }
}

/// The sources shown while `ltc create` and `ltc scale` wait: what the cell
/// and the app say, and staging's output. Health checks are left out: a
/// check that fails while the app starts up is expected, and noisy.
pub const WAIT_SOURCES: &[&str] = &[SOURCE_APP, SOURCE_CELL, SOURCE_STAGING];

/// How many lines may wait to be shown before the follow pauses (and the
/// hub, not ltc, drops the excess for this reader).
const TAIL_BUFFER: usize = 256;

/// An app's lines followed from when it was started, shown above the
/// spinner while a command waits ([`LogTail::show_while`]). The logs are a
/// help, never a condition: if they cannot be followed, the command goes
/// on and says so once.
pub struct LogTail {
    events: Option<mpsc::Receiver<Event>>,
    /// Why there are no events, until it is shown.
    unavailable: Option<String>,
    format: LineFormat,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LogTail {
    /// Follows `log_guid` from now on (no recent lines), keeping the lines
    /// of [`WAIT_SOURCES`]. Returns once the hub has registered the
    /// follow, so that no line logged afterwards is missed.
    pub async fn start(client: LogsClient, log_guid: &str, format: LineFormat) -> LogTail {
        let source = Source::App {
            log_guid: log_guid.to_string(),
            filter: LogFilter::default(),
        };
        let mut live = match LiveLogs::connect(client, source, false).await {
            Ok(live) => live,
            Err(err) => {
                return LogTail {
                    events: None,
                    unavailable: Some(format!(
                        "the app's logs are not shown: {:#}",
                        anyhow::Error::from(err)
                    )),
                    format,
                    task: None,
                }
            }
        };
        let (sender, events) = mpsc::channel(TAIL_BUFFER);
        let task = tokio::spawn(async move {
            loop {
                let event = match live.next().await {
                    Ok(Event::Line(line)) if !shown_while_waiting(&line) => continue,
                    Ok(event) => event,
                    Err(err) => {
                        let notice = format!(
                            "stopped following the app's logs: {:#}",
                            anyhow::Error::from(err)
                        );
                        // Whether it is shown or not, there is nothing more.
                        let _ = sender.send(Event::Notice(notice)).await;
                        return;
                    }
                };
                // A closed channel: the command stopped waiting.
                if sender.send(event).await.is_err() {
                    return;
                }
            }
        });
        LogTail {
            events: Some(events),
            unavailable: None,
            format,
            task: Some(task),
        }
    }

    /// Runs `work` to its end, printing the lines that arrive meanwhile
    /// above `spinner`. Lines still on their way when it ends wait for the
    /// next call (or are dropped with the tail).
    pub async fn show_while<T>(&mut self, work: impl Future<Output = T>, spinner: &Spinner) -> T {
        if let Some(note) = self.unavailable.take() {
            spinner.println(&note);
        }
        let mut work = std::pin::pin!(work);
        let Some(events) = &mut self.events else {
            return work.await;
        };
        loop {
            tokio::select! {
                result = &mut work => return result,
                Some(event) = events.recv() => match event {
                    Event::Line(line) => spinner.println(&self.format.render(&line)),
                    Event::Notice(notice) => spinner.println(&notice),
                },
            }
        }
    }
}

impl Drop for LogTail {
    /// Stops following: the wait is over.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A line of [`WAIT_SOURCES`], or one the hub wrote (lines dropped).
fn shown_while_waiting(line: &LogMessage) -> bool {
    WAIT_SOURCES.contains(&line.source_type.as_str())
        || line.source_type == lattice_models::log::SOURCE_LOGGREGATOR
}

/// The last `max` recent lines of the instances `indexes` of `log_guid`,
/// rendered without colour, for an error that explains why they are not
/// running.
///
/// # Errors
/// The hub's, if the lines cannot be read.
pub async fn recent_lines_of_instances(
    client: &LogsClient,
    log_guid: &str,
    indexes: &[i64],
    max: usize,
) -> Result<Vec<String>, ClientError> {
    let lines = client.recent(log_guid, &LogFilter::default()).await?;
    let wanted: Vec<String> = indexes.iter().map(i64::to_string).collect();
    let mut kept: Vec<&LogMessage> = lines
        .iter()
        .filter(|line| wanted.contains(&line.source_instance))
        .collect();
    let skip = kept.len().saturating_sub(max);
    kept.drain(..skip);
    let format = LineFormat::new(false);
    Ok(kept.into_iter().map(|line| format.render(line)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: &str, instance: &str, text: &str, kind: MessageType) -> LogMessage {
        LogMessage {
            log_guid: "web".into(),
            source_type: source.into(),
            source_instance: instance.into(),
            message: text.into(),
            message_type: kind,
            // 2023-11-14T22:13:20.123456789Z
            timestamp: 1_700_000_000_123_456_789,
        }
    }

    fn plain_utc() -> LineFormat {
        LineFormat::with_time_zone(false, TimeZone::UTC)
    }

    #[test]
    fn time_is_local_with_milliseconds() {
        let at = line("APP", "0", "x", MessageType::Out);
        assert_eq!(plain_utc().render(&at), "22:13:20.123 [APP/0] x");
        let two_hours_ahead = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(
            LineFormat::with_time_zone(false, two_hours_ahead).render(&at),
            "00:13:20.123 [APP/0] x"
        );
        let mut early = at.clone();
        early.timestamp = 5_000_000; // 5 ms after the epoch
        assert_eq!(plain_utc().render(&early), "00:00:00.005 [APP/0] x");
        let mut far = at;
        far.timestamp = i64::MAX;
        assert_eq!(plain_utc().render(&far), "23:47:16.854 [APP/0] x");
        far.timestamp = i64::MIN;
        assert_eq!(plain_utc().render(&far), "00:12:43.145 [APP/0] x");
    }

    #[test]
    fn tags_name_the_source_and_the_instance() {
        let format = plain_utc();
        let cell = line("CELL", "", "Creating container", MessageType::Out);
        assert_eq!(
            format.render(&cell),
            "22:13:20.123 [CELL] Creating container"
        );
        let health = line("HEALTH", "3", "healthy", MessageType::Out);
        assert_eq!(format.render(&health), "22:13:20.123 [HEALTH/3] healthy");
        let debug = line("rep", "cell-1", "INFO started", MessageType::Out);
        assert_eq!(
            format.render(&debug),
            "22:13:20.123 [rep/cell-1] INFO started"
        );
    }

    #[test]
    fn stderr_lines_are_marked_without_colour_and_red_with_it() {
        let err = line("APP", "0", "boom", MessageType::Err);
        assert_eq!(plain_utc().render(&err), "22:13:20.123 [APP/0] ERR boom");
        let unmarked = plain_utc().without_err_marker().render(&err);
        assert_eq!(unmarked, "22:13:20.123 [APP/0] boom");
        let coloured = LineFormat::with_time_zone(true, TimeZone::UTC).render(&err);
        assert_eq!(
            coloured,
            "\x1b[2m22:13:20.123\x1b[0m \x1b[32m[APP/0]\x1b[0m \x1b[31mboom\x1b[0m"
        );
    }

    #[test]
    fn colours_only_when_asked_and_only_known_sources() {
        let coloured = LineFormat::with_time_zone(true, TimeZone::UTC);
        for source in ["APP", "STG", "CELL", "HEALTH", "RTR"] {
            let rendered = coloured.render(&line(source, "", "x", MessageType::Out));
            assert!(
                rendered.contains(&format!("m[{source}]\x1b[0m x")),
                "{rendered:?}"
            );
        }
        let other = coloured.render(&line("rep", "", "x", MessageType::Out));
        assert_eq!(other, "\x1b[2m22:13:20.123\x1b[0m [rep] x");
        let plain = plain_utc().render(&line("APP", "0", "x", MessageType::Out));
        assert!(!plain.contains('\x1b'), "{plain:?}");
    }

    #[test]
    fn backoff_doubles_up_to_a_limit() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [250, 500, 1000, 2000, 4000]
        );
        assert_eq!(ms(5), 5000);
        assert_eq!(ms(u32::MAX), 5000, "no overflow");
    }

    #[test]
    fn only_failures_that_may_heal_are_retried() {
        let api = |status| ClientError::Api {
            status,
            error: lattice_models::ApiErrorBody {
                name: lattice_models::ApiErrorName::Unauthorized,
                message: "no".into(),
                field: None,
            },
        };
        assert!(!is_transient(&api(401)));
        assert!(is_transient(&api(503)));
        let proxy = ClientError::UnexpectedStatus {
            target: "http://x".into(),
            status: 502,
            body: String::new(),
        };
        assert!(is_transient(&proxy));
        assert!(!is_transient(&ClientError::InvalidArgument {
            what: "log guid",
            value: ".".into(),
        }));
    }

    #[test]
    fn the_waits_show_app_cell_staging_and_drop_markers() {
        for (source, shown) in [
            ("APP", true),
            ("CELL", true),
            ("STG", true),
            ("LGR", true),
            ("HEALTH", false),
            ("RTR", false),
        ] {
            let l = line(source, "0", "x", MessageType::Out);
            assert_eq!(shown_while_waiting(&l), shown, "{source}");
        }
    }
}
