//! Where log lines go: the [`LogSink`] trait, its two implementations, and
//! the [`LineSplitter`] that turns a process's output chunks into lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lattice_models::log::{LogMessage, MessageType};
use tokio::sync::mpsc;

/// Longest line we emit; a longer one is cut into pieces of this size, so one
/// process that never writes a newline cannot grow our memory without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Receives every log line the executor produces.
///
/// # Assumptions
/// `emit` returns at once: it is called from the loop that drains a process's
/// output, and a slow sink must never slow down (or block) the process. A sink
/// that cannot keep up drops lines.
pub trait LogSink: Send + Sync + 'static {
    fn emit(&self, message: LogMessage);
}

/// A sink that forwards to a bounded channel, dropping lines (and counting
/// them) when the channel is full or closed.
pub struct ChannelSink {
    tx: mpsc::Sender<LogMessage>,
    dropped: AtomicU64,
}

impl ChannelSink {
    /// A sink and the receiving end of its channel, which holds up to
    /// `capacity` lines.
    pub fn new(capacity: usize) -> (ChannelSink, mpsc::Receiver<LogMessage>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sink = ChannelSink {
            tx,
            dropped: AtomicU64::new(0),
        };
        (sink, rx)
    }

    /// How many lines were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl LogSink for ChannelSink {
    fn emit(&self, message: LogMessage) {
        if self.tx.try_send(message).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Warn on 1, 2, 4, 8, ... drops: visible, but not a flood of its own.
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "log channel full or closed; dropping log lines");
            }
        }
    }
}

/// A sink that keeps every line in memory; for tests.
#[derive(Default)]
pub struct CollectingSink {
    messages: Mutex<Vec<LogMessage>>,
}

impl CollectingSink {
    pub fn new() -> Arc<CollectingSink> {
        Arc::new(CollectingSink::default())
    }

    /// Every line emitted so far, in order.
    pub fn messages(&self) -> Vec<LogMessage> {
        self.lock().clone()
    }

    /// The text of every line emitted so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lock().iter().map(|m| m.message.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LogMessage>> {
        // A panic while holding the lock leaves a Vec that is still valid.
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogSink for CollectingSink {
    fn emit(&self, message: LogMessage) {
        self.lock().push(message);
    }
}

/// The tags of the lines of one action: whose they are and who wrote them.
#[derive(Clone)]
pub(crate) struct LogTarget {
    pub sink: Arc<dyn LogSink>,
    pub log_guid: String,
    pub source: String,
    pub instance: String,
}

impl LogTarget {
    /// The same target with `source` replaced, when an action names one.
    pub fn with_source(&self, source: Option<&str>) -> LogTarget {
        match source {
            Some(source) if !source.is_empty() => LogTarget {
                source: source.to_string(),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    pub fn emit(&self, message_type: MessageType, message: String) {
        self.sink.emit(LogMessage {
            log_guid: self.log_guid.clone(),
            source_type: self.source.clone(),
            source_instance: self.instance.clone(),
            message,
            message_type,
            timestamp: lattice_models::unix_nanos(SystemTime::now()),
        });
    }

    pub fn out(&self, message: impl Into<String>) {
        self.emit(MessageType::Out, message.into());
    }

    pub fn err(&self, message: impl Into<String>) {
        self.emit(MessageType::Err, message.into());
    }
}

/// Splits a byte stream into lines: a partial line waits for its newline (or
/// for [`finish`](Self::finish)); a line longer than `max_line` is cut into
/// pieces; `\r\n` counts as a newline; invalid UTF-8 is replaced.
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    /// `max_line` must be at least 4 bytes, the longest UTF-8 character.
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            max_line: max_line.max(4),
        }
    }

    /// Feeds a chunk; calls `emit` for every line it completes.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..newline]);
            bytes = &bytes[newline + 1..];
            self.cut_long(&mut emit);
            if self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            emit(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
        self.pending.extend_from_slice(bytes);
        self.cut_long(&mut emit);
    }

    /// Emits what is left of an unterminated last line, if anything.
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
    }

    /// Emits `max_line`-sized pieces while more than that is pending.
    fn cut_long(&mut self, emit: &mut impl FnMut(String)) {
        while self.pending.len() > self.max_line {
            let cut = char_boundary_before(&self.pending, self.max_line);
            emit(String::from_utf8_lossy(&self.pending[..cut]).into_owned());
            self.pending.drain(..cut);
        }
    }
}

/// The largest index `<= max` that does not split a UTF-8 character, so that
/// cutting a long line does not turn a valid character into two replacement
/// characters. Falls back to `max` when the bytes are not UTF-8 anyway.
fn char_boundary_before(bytes: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && !is_continuation(bytes[i]))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max_line: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::new(max_line);
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l));
        }
        splitter.finish(|l| lines.push(l));
        lines
    }

    #[test]
    fn splits_lines_across_chunks() {
        let lines = split(&[b"hel", b"lo\nwor", b"ld\n\nlast"], 1024);
        assert_eq!(lines, ["hello", "world", "", "last"]);
    }

    #[test]
    fn partial_line_waits_for_newline() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::new(1024);
        splitter.push(b"no newline yet", |l| lines.push(l));
        assert!(lines.is_empty());
        splitter.push(b"!\r\n", |l| lines.push(l));
        assert_eq!(lines, ["no newline yet!"]);
        splitter.finish(|l| lines.push(l));
        assert_eq!(
            lines.len(),
            1,
            "finish emits nothing when nothing is pending"
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; 25];
        let lines = split(&[&long, b"\nshort\n"], 10);
        assert_eq!(
            lines,
            [
                "x".repeat(10),
                "x".repeat(10),
                "x".repeat(5),
                "short".into()
            ]
        );
        // Exactly max_line bytes then a newline is one line, not two.
        assert_eq!(split(&[b"0123456789\n"], 10), ["0123456789"]);
    }

    #[test]
    fn long_lines_are_cut_between_characters() {
        // "é" is two bytes; a cut at byte 5 would split the third one.
        let lines = split(&["aéé\u{e9}é".as_bytes()], 6);
        assert_eq!(lines, ["aéé", "éé"]);
        assert!(lines.iter().all(|l| !l.contains('\u{fffd}')));
    }

    #[test]
    fn binary_garbage_is_replaced() {
        let lines = split(&[&[0xff, 0xfe, b'o', b'k', b'\n', 0xc3]], 1024);
        assert_eq!(lines, ["\u{fffd}\u{fffd}ok", "\u{fffd}"]);
        let garbage = vec![0x80; 30];
        let lines = split(&[&garbage], 8);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.chars().all(|c| c == '\u{fffd}')));
    }

    #[test]
    fn channel_sink_drops_when_full() {
        let (sink, mut rx) = ChannelSink::new(1);
        let target = LogTarget {
            sink: Arc::new(sink),
            log_guid: "guid".into(),
            source: "APP".into(),
            instance: "3".into(),
        };
        target.out("one");
        target.err("two");
        let first = rx.try_recv().unwrap();
        assert_eq!(first.message, "one");
        assert_eq!(first.source_instance, "3");
        assert!(
            rx.try_recv().is_err(),
            "the second line was dropped, not queued"
        );
    }
}
