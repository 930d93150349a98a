//! The hub's recent lines on disk, so that `ltc logs --recent` still shows
//! them after the server restarts.
//!
//! One file of newline-delimited JSON [`LogMessage`]s per log guid, named
//! after the SHA-256 of the guid (any guid makes a safe, short file name).
//! A writer thread appends what [`LogHub::publish`](crate::LogHub::publish)
//! hands it through a bounded channel, so publishing never waits on the disk.
//!
//! # Guarantees
//! - Bounded: a file grows to at most [`DiskConfig::max_bytes_per_app`], then
//!   is cut to its newest half; at most [`DiskConfig::max_apps`] files are
//!   kept, the least recently written going first.
//! - A line is in the file once `write(2)` returned, so a process killed
//!   with SIGKILL keeps every line the writer had written. A line cut short
//!   by the kill is skipped when the files are read back.
//!
//! # Caveats
//! - Lines still in the channel when the process dies are lost (the channel
//!   holds [`CHANNEL_LINES`]; the writer empties it as lines come). A full
//!   channel drops lines from the disk copy only, never from the hub.
//! - No fsync: the copy survives the process, not a crash of the machine.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use lattice_models::log::LogMessage;
use sha2::{Digest, Sha256};

/// Lines waiting for the writer before new ones skip the disk.
pub const CHANNEL_LINES: usize = 16 * 1024;

/// Where and how much the hub keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Created if missing; holds nothing but the hub's files.
    pub dir: PathBuf,
    /// Most bytes one app's file holds before it is cut to its newest half.
    pub max_bytes_per_app: u64,
    /// Most apps with a file; beyond, the least recently written is removed.
    pub max_apps: usize,
}

impl DiskConfig {
    /// 1 MiB per app, 1,024 apps: at most 1 GiB, far less in practice.
    pub fn new(dir: impl Into<PathBuf>) -> DiskConfig {
        DiskConfig {
            dir: dir.into(),
            max_bytes_per_app: 1024 * 1024,
            max_apps: 1024,
        }
    }
}

/// The file of `log_guid` under `dir`.
pub fn file_of(dir: &Path, log_guid: &str) -> PathBuf {
    let digest = Sha256::digest(log_guid.as_bytes());
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.ndjson"))
}

/// Reads every app's file: the newest `keep` lines of each, oldest first.
/// Unreadable files and lines (cut short by a kill) are skipped.
pub fn load(dir: &Path, keep: usize) -> std::io::Result<HashMap<String, Vec<LogMessage>>> {
    let mut apps: HashMap<String, Vec<LogMessage>> = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        for line in BufReader::new(file).split(b'\n') {
            let Ok(line) = line else { break };
            let Ok(message) = serde_json::from_slice::<LogMessage>(&line) else {
                continue;
            };
            let lines = apps.entry(message.log_guid.clone()).or_default();
            lines.push(message);
            if lines.len() > keep.saturating_mul(2) {
                lines.drain(..lines.len() - keep);
            }
        }
    }
    for lines in apps.values_mut() {
        if lines.len() > keep {
            lines.drain(..lines.len() - keep);
        }
    }
    apps.retain(|_, lines| !lines.is_empty());
    Ok(apps)
}

/// Starts the writer thread; lines sent to the returned channel are
/// appended. The thread ends when every sender is gone.
pub fn start_writer(config: DiskConfig) -> std::io::Result<SyncSender<LogMessage>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL_LINES);
    let mut writer = Writer::open(config)?;
    std::thread::Builder::new()
        .name("log-hub-disk".to_string())
        .spawn(move || writer.run(receiver))?;
    Ok(sender)
}

struct Writer {
    config: DiskConfig,
    /// Size of each app's file, by file path.
    sizes: HashMap<PathBuf, u64>,
    /// When each file was last written (a counter), to remove the oldest.
    written: HashMap<PathBuf, u64>,
    clock: u64,
}

impl Writer {
    /// Takes stock of the files there, oldest first by modification time.
    fn open(config: DiskConfig) -> std::io::Result<Writer> {
        std::fs::create_dir_all(&config.dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&config.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "ndjson") {
                let metadata = entry.metadata()?;
                files.push((metadata.modified().ok(), metadata.len(), path));
            }
        }
        files.sort();
        let mut writer = Writer {
            config,
            sizes: HashMap::new(),
            written: HashMap::new(),
            clock: 0,
        };
        for (_, size, path) in files {
            writer.clock += 1;
            writer.sizes.insert(path.clone(), size);
            writer.written.insert(path, writer.clock);
        }
        writer.evict();
        Ok(writer)
    }

    fn run(&mut self, receiver: Receiver<LogMessage>) {
        while let Ok(first) = receiver.recv() {
            // Whatever else is waiting goes in the same pass: one open and
            // one write per app, however many lines came.
            let mut batch: HashMap<String, Vec<u8>> = HashMap::new();
            for message in std::iter::once(first).chain(receiver.try_iter().take(CHANNEL_LINES)) {
                let bytes = batch.entry(message.log_guid.clone()).or_default();
                // A LogMessage is strings and integers: it always serializes.
                if serde_json::to_writer(&mut *bytes, &message).is_ok() {
                    bytes.push(b'\n');
                }
            }
            for (log_guid, bytes) in batch {
                if let Err(err) = self.append(&log_guid, &bytes) {
                    // Safe to trace: the server's own events reach the hub
                    // under DEBUG_LOG_GUID, which never comes here.
                    tracing::warn!(%log_guid, error = %err, "cannot keep log lines on disk");
                }
            }
        }
    }

    fn append(&mut self, log_guid: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = file_of(&self.config.dir, log_guid);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(bytes)?;
        self.clock += 1;
        let size = self.sizes.entry(path.clone()).or_insert(0);
        *size += bytes.len() as u64;
        let too_big = *size > self.config.max_bytes_per_app;
        self.written.insert(path.clone(), self.clock);
        if too_big {
            let kept = cut_to_newest(&path, self.config.max_bytes_per_app / 2)?;
            self.sizes.insert(path, kept);
        }
        self.evict();
        Ok(())
    }

    /// Removes the least recently written files beyond `max_apps`.
    fn evict(&mut self) {
        while self.written.len() > self.config.max_apps.max(1) {
            let Some(oldest) = self
                .written
                .iter()
                .min_by_key(|(_, clock)| **clock)
                .map(|(path, _)| path.clone())
            else {
                return;
            };
            let _ = std::fs::remove_file(&oldest);
            self.written.remove(&oldest);
            self.sizes.remove(&oldest);
        }
    }
}

/// Rewrites `path` with its newest whole lines that fit in `keep_bytes`
/// (through a temporary file and a rename, so a kill leaves one or the
/// other); the new size.
fn cut_to_newest(path: &Path, keep_bytes: u64) -> std::io::Result<u64> {
    let contents = std::fs::read(path)?;
    let mut start = contents.len().saturating_sub(keep_bytes as usize);
    // Start after a line break, so the first line kept is whole.
    if start > 0 {
        start = match contents[start - 1..].iter().position(|b| *b == b'\n') {
            Some(offset) => start + offset,
            None => contents.len(),
        };
    }
    let kept = &contents[start..];
    let temporary = path.with_extension("ndjson.tmp");
    std::fs::write(&temporary, kept)?;
    std::fs::rename(&temporary, path)?;
    Ok(kept.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_models::log::MessageType;

    fn line(guid: &str, text: &str) -> LogMessage {
        LogMessage {
            log_guid: guid.into(),
            source_type: "APP".into(),
            source_instance: "0".into(),
            message: text.into(),
            message_type: MessageType::Out,
            timestamp: 1,
        }
    }

    fn texts(lines: &[LogMessage]) -> Vec<&str> {
        lines.iter().map(|m| m.message.as_str()).collect()
    }

    #[test]
    fn lines_come_back_newest_kept_and_a_cut_line_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = Writer::open(DiskConfig::new(dir.path())).expect("open");
        for i in 0..5 {
            let mut bytes = serde_json::to_vec(&line("app/1", &format!("line {i}"))).unwrap();
            bytes.push(b'\n');
            writer.append("app/1", &bytes).expect("append");
        }
        // A kill in the middle of a write leaves half a line.
        let mut file = OpenOptions::new()
            .append(true)
            .open(file_of(dir.path(), "app/1"))
            .unwrap();
        file.write_all(b"{\"log_guid\":\"app/1\",\"mess").unwrap();

        let apps = load(dir.path(), 3).expect("load");
        assert_eq!(texts(&apps["app/1"]), ["line 2", "line 3", "line 4"]);
    }

    #[test]
    fn a_file_is_cut_to_its_newest_half_and_the_oldest_app_goes_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DiskConfig {
            dir: dir.path().to_path_buf(),
            max_bytes_per_app: 2_000,
            max_apps: 2,
        };
        let mut writer = Writer::open(config).expect("open");
        for i in 0..100 {
            let mut bytes = serde_json::to_vec(&line("big", &format!("line {i}"))).unwrap();
            bytes.push(b'\n');
            writer.append("big", &bytes).expect("append");
        }
        let size = std::fs::metadata(file_of(dir.path(), "big")).unwrap().len();
        assert!(size <= 2_000, "{size} bytes");
        let apps = load(dir.path(), 1_000).expect("load");
        let kept = texts(&apps["big"]);
        assert_eq!(kept.last(), Some(&"line 99"));
        assert!(kept.len() < 100);

        for guid in ["second", "third"] {
            let mut bytes = serde_json::to_vec(&line(guid, "hello")).unwrap();
            bytes.push(b'\n');
            writer.append(guid, &bytes).expect("append");
        }
        let apps = load(dir.path(), 1_000).expect("load");
        let mut guids: Vec<&str> = apps.keys().map(String::as_str).collect();
        guids.sort();
        assert_eq!(guids, ["second", "third"]);
    }
}
