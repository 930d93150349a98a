//! A recording fake [`Garden`] for tests of the executor and of its callers.
//!
//! Processes follow a [`Script`] chosen by their `path` (output chunks with
//! delays, a run time, an exit status, whether they ignore SIGTERM, files
//! they write); every
//! process started, every signal sent and every archive streamed in is
//! recorded. Time is `tokio::time`, so tests may pause it. Files streamed in
//! (or put with [`FakeGarden::put_file`]) can be streamed out again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use lattice_garden::{
    ContainerEvent, ContainerEventKind, ContainerInfo, ContainerSpec, ContainerUsage, Garden,
    GardenError, GardenResult, Interactive, InteractiveProcess, OutputChunk, OutputStream, Process,
    ProcessSpec, Signal, TtySize,
};
use tokio::sync::{mpsc, watch};

/// What a fake process does.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Chunks written, each after its delay.
    pub output: Vec<(Duration, OutputStream, Bytes)>,
    /// How long the process runs after writing its output.
    pub runtime: Duration,
    pub exit_status: i64,
    /// Whether SIGTERM is ignored (only SIGKILL ends the process).
    pub ignores_term: bool,
    /// Regular files the process writes into its container as it starts,
    /// by absolute path (e.g. a task's result file).
    pub writes: Vec<(String, Bytes)>,
}

impl Script {
    /// A process that exits at once with `status`.
    pub fn exits(status: i64) -> Script {
        Script {
            exit_status: status,
            ..Script::default()
        }
    }

    /// A process that runs for `runtime` then exits 0.
    pub fn runs_for(runtime: Duration) -> Script {
        Script {
            runtime,
            ..Script::default()
        }
    }

    /// A process that runs until it is signalled (a server).
    pub fn runs_until_stopped() -> Script {
        // A year is forever to a test, and far from overflowing an Instant.
        Script::runs_for(Duration::from_secs(365 * 24 * 3600))
    }

    /// Writes `contents` to the file `path` of its container as it starts.
    pub fn writes(mut self, path: &str, contents: impl Into<Bytes>) -> Script {
        self.writes.push((path.to_string(), contents.into()));
        self
    }

    pub fn stdout(mut self, bytes: impl Into<Bytes>) -> Script {
        self.output
            .push((Duration::ZERO, OutputStream::Stdout, bytes.into()));
        self
    }

    pub fn stderr(mut self, bytes: impl Into<Bytes>) -> Script {
        self.output
            .push((Duration::ZERO, OutputStream::Stderr, bytes.into()));
        self
    }

    /// Writes `bytes` to stdout after `delay`.
    pub fn stdout_after(mut self, delay: Duration, bytes: impl Into<Bytes>) -> Script {
        self.output
            .push((delay, OutputStream::Stdout, bytes.into()));
        self
    }

    pub fn ignoring_term(mut self) -> Script {
        self.ignores_term = true;
        self
    }
}

/// What happened to one process.
#[derive(Debug, Clone)]
pub struct ProcessRecord {
    pub handle: String,
    pub spec: ProcessSpec,
    pub signals: Vec<Signal>,
    /// `None` while it runs.
    pub exit_status: Option<i64>,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    containers: BTreeMap<String, ContainerInfo>,
    specs: Vec<ContainerSpec>,
    processes: Vec<ProcessRecord>,
    /// Terminal sizes interactive processes were given, by process index.
    resizes: Vec<(usize, TtySize)>,
    /// Per process, the sender of its signals (to kill them on destroy).
    signal_senders: Vec<mpsc::UnboundedSender<Signal>>,
    streamed_in: Vec<(String, String, Bytes)>,
    /// Regular files by (handle, absolute path).
    files: BTreeMap<(String, String), Bytes>,
    /// Subscribers of [`Garden::container_events`], with their property
    /// filter.
    event_subscribers: Vec<(
        BTreeMap<String, String>,
        mpsc::UnboundedSender<ContainerEvent>,
    )>,
    /// What [`Garden::usage`] answers, by handle (zero when not set).
    usage: HashMap<String, ContainerUsage>,
    /// What [`Garden::image_config`] answers, by rootfs (empty when not
    /// set).
    image_configs: HashMap<String, lattice_models::lifecycle::ImageConfig>,
    /// When set, reading any image's config fails with this, as an
    /// engine that cannot be asked does.
    image_config_failure: Option<String>,
    /// How many times each rootfs's image was rebuilt (see
    /// [`FakeGarden::rebuild_image`]): its id is made from the count.
    image_builds: HashMap<String, u32>,
}

impl State {
    fn image_id(&self, rootfs: &str) -> String {
        let builds = self.image_builds.get(rootfs).copied().unwrap_or(0);
        format!("fake:{rootfs}#{builds}")
    }
}

/// The fake backend; cheap to clone, clones share their state.
#[derive(Clone, Default)]
pub struct FakeGarden {
    state: Arc<Mutex<State>>,
}

impl FakeGarden {
    pub fn new() -> FakeGarden {
        FakeGarden::default()
    }

    /// Processes started with this `path` follow `script`; others exit 0 at
    /// once without output.
    pub fn script(&self, path: &str, script: Script) {
        self.lock().scripts.insert(path.to_string(), script);
    }

    /// Reports an out-of-memory kill in container `handle` to every
    /// subscriber whose filter its properties match, as the engine would.
    pub fn oom(&self, handle: &str) {
        self.report(handle, ContainerEventKind::OutOfMemory);
    }

    /// Reports that container `handle`'s init exited, as the engine would;
    /// the fake's processes in it are not touched (tests decide).
    pub fn exited(&self, handle: &str, status: Option<i64>) {
        self.report(handle, ContainerEventKind::Exited { status });
    }

    fn report(&self, handle: &str, kind: ContainerEventKind) {
        let mut state = self.lock();
        let Some(properties) = state.containers.get(handle).map(|c| c.properties.clone()) else {
            return;
        };
        state.event_subscribers.retain(|(filter, sender)| {
            let matches = filter.iter().all(|(k, v)| properties.get(k) == Some(v));
            !matches
                || sender
                    .send(ContainerEvent {
                        handle: handle.to_string(),
                        properties: properties.clone(),
                        kind,
                    })
                    .is_ok()
        });
    }

    /// Whether something subscribed to container events (tests wait for
    /// it).
    pub fn has_event_subscribers(&self) -> bool {
        !self.lock().event_subscribers.is_empty()
    }

    /// Every process started so far, in start order.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        self.lock().processes.clone()
    }

    /// Every resize of an interactive process's terminal: the process's
    /// index in [`FakeGarden::processes`] and the size.
    pub fn resizes(&self) -> Vec<(usize, TtySize)> {
        self.lock().resizes.clone()
    }

    /// The records of processes started with `path`.
    pub fn processes_of(&self, path: &str) -> Vec<ProcessRecord> {
        self.processes()
            .into_iter()
            .filter(|p| p.spec.path == path)
            .collect()
    }

    /// Every container spec passed to `create`.
    pub fn created(&self) -> Vec<ContainerSpec> {
        self.lock().specs.clone()
    }

    /// Every `(handle, destination, tar)` passed to `stream_in`.
    pub fn streamed_in(&self) -> Vec<(String, String, Bytes)> {
        self.lock().streamed_in.clone()
    }

    /// Puts a regular file at `path` in the container, for `stream_out`.
    pub fn put_file(&self, handle: &str, path: &str, contents: impl Into<Bytes>) {
        self.lock()
            .files
            .insert((handle.to_string(), path.to_string()), contents.into());
    }

    /// The file at `path` in the container, if any.
    pub fn file(&self, handle: &str, path: &str) -> Option<Bytes> {
        self.lock()
            .files
            .get(&(handle.to_string(), path.to_string()))
            .cloned()
    }

    /// What [`Garden::usage`] answers for the container from now on.
    pub fn set_usage(&self, handle: &str, usage: ContainerUsage) {
        self.lock().usage.insert(handle.to_string(), usage);
    }

    /// What [`Garden::image_config`] answers for `rootfs` from now on.
    pub fn set_image_config(&self, rootfs: &str, config: lattice_models::lifecycle::ImageConfig) {
        self.lock().image_configs.insert(rootfs.to_string(), config);
    }

    /// The image of `rootfs` is built again under the same name, as
    /// `docker build -t` does: containers made before keep the old one.
    pub fn rebuild_image(&self, rootfs: &str) {
        *self
            .lock()
            .image_builds
            .entry(rootfs.to_string())
            .or_default() += 1;
    }

    /// Every [`Garden::image_config`] from now on fails with `reason` (a
    /// backend error: the engine could not be asked).
    pub fn fail_image_configs(&self, reason: &str) {
        self.lock().image_config_failure = Some(reason.to_string());
    }

    /// Marks the container as killed for exceeding its memory limit.
    pub fn set_oom_killed(&self, handle: &str) {
        if let Some(info) = self.lock().containers.get_mut(handle) {
            info.oom_killed = true;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a test panicked holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn container_exists(&self, handle: &str) -> GardenResult<()> {
        if self.lock().containers.contains_key(handle) {
            Ok(())
        } else {
            Err(GardenError::ContainerNotFound(handle.to_string()))
        }
    }
}

#[async_trait]
impl Garden for FakeGarden {
    async fn create(&self, spec: ContainerSpec) -> GardenResult<ContainerInfo> {
        let mut state = self.lock();
        if state.containers.contains_key(&spec.handle) {
            return Err(GardenError::ContainerExists(spec.handle));
        }
        let info = ContainerInfo {
            handle: spec.handle.clone(),
            host_ip: "127.0.0.1".into(),
            container_ip: "10.0.0.2".into(),
            ports: spec
                .ports
                .iter()
                .enumerate()
                .map(|(i, &port)| lattice_garden::PortMapping {
                    container_port: u32::from(port),
                    host_port: 61000 + i as u32,
                })
                .collect(),
            properties: spec.properties.clone(),
            running: true,
            oom_killed: false,
            image: state.image_id(&spec.rootfs),
            // Processes outliving their caller (a cell restart) are not faked.
            processes: Vec::new(),
        };
        state.containers.insert(spec.handle.clone(), info.clone());
        state.specs.push(spec);
        Ok(info)
    }

    async fn destroy(&self, handle: &str) -> GardenResult<()> {
        let mut state = self.lock();
        state.containers.remove(handle);
        let State {
            processes,
            signal_senders,
            ..
        } = &mut *state;
        for (record, sender) in processes.iter().zip(signal_senders.iter()) {
            if record.handle == handle && record.exit_status.is_none() {
                let _ = sender.send(Signal::Kill);
            }
        }
        Ok(())
    }

    async fn info(&self, handle: &str) -> GardenResult<ContainerInfo> {
        self.lock()
            .containers
            .get(handle)
            .cloned()
            .ok_or_else(|| GardenError::ContainerNotFound(handle.to_string()))
    }

    async fn list(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> GardenResult<Vec<ContainerInfo>> {
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| {
                properties
                    .iter()
                    .all(|(k, v)| c.properties.get(k) == Some(v))
            })
            .cloned()
            .collect())
    }

    async fn container_events(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> GardenResult<BoxStream<'static, ContainerEvent>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock()
            .event_subscribers
            .push((properties.clone(), sender));
        Ok(Box::pin(stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|event| (event, receiver)) },
        )))
    }

    async fn stream_in_file(
        &self,
        handle: &str,
        destination: &str,
        mut tar: std::fs::File,
    ) -> GardenResult<()> {
        // The fake keeps files in memory anyway; tests stream small ones.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut tar, &mut bytes)
            .map_err(|e| GardenError::Backend(format!("read tar: {e}")))?;
        self.stream_in(handle, destination, Bytes::from(bytes))
            .await
    }

    async fn stream_in(&self, handle: &str, destination: &str, tar: Bytes) -> GardenResult<()> {
        self.container_exists(handle)?;
        let mut files = Vec::new();
        let mut archive = tar::Archive::new(&tar[..]);
        let bad = |e: std::io::Error| GardenError::Backend(format!("bad tar: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let mut contents = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut contents).map_err(bad)?;
            let path = format!("{}/{}", destination.trim_end_matches('/'), name);
            files.push((path, Bytes::from(contents)));
        }
        let mut state = self.lock();
        for (path, contents) in files {
            state.files.insert((handle.to_string(), path), contents);
        }
        state
            .streamed_in
            .push((handle.to_string(), destination.to_string(), tar));
        Ok(())
    }

    async fn stream_out(
        &self,
        handle: &str,
        path: &str,
    ) -> GardenResult<BoxStream<'static, GardenResult<Bytes>>> {
        self.container_exists(handle)?;
        let Some(contents) = self.file(handle, path) else {
            return Err(GardenError::PathNotFound {
                handle: handle.to_string(),
                path: path.to_string(),
            });
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let tar = crate::archive::tar_of_file(name, &contents, 0o644)
            .map_err(|e| GardenError::Backend(e.to_string()))?;
        // Several chunks, as a real backend streams them.
        let chunks: Vec<GardenResult<Bytes>> = tar
            .chunks(700)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(Box::pin(stream::iter(chunks)))
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> GardenResult<Box<dyn Process>> {
        Ok(Box::new(self.start(handle, spec)?))
    }

    /// Plays the script as [`Garden::run`] does; stdin is read and dropped,
    /// and resizes are recorded ([`FakeGarden::resizes`]).
    async fn exec_interactive(
        &self,
        handle: &str,
        spec: ProcessSpec,
        _tty: Option<TtySize>,
    ) -> GardenResult<Interactive> {
        Ok(Interactive {
            stdin: Box::pin(tokio::io::sink()),
            process: Box::new(self.start(handle, spec)?),
        })
    }

    /// The config set for the image ([`FakeGarden::set_image_config`]),
    /// else an empty one; or the failure set with
    /// [`FakeGarden::fail_image_configs`].
    async fn image_config(
        &self,
        rootfs: &str,
    ) -> GardenResult<lattice_models::lifecycle::ImageConfig> {
        lattice_garden::ImageRef::from_rootfs(rootfs)?;
        let state = self.lock();
        if let Some(reason) = &state.image_config_failure {
            return Err(GardenError::Backend(reason.clone()));
        }
        Ok(state.image_configs.get(rootfs).cloned().unwrap_or_default())
    }

    async fn image_id(&self, rootfs: &str) -> GardenResult<Option<String>> {
        lattice_garden::ImageRef::from_rootfs(rootfs)?;
        Ok(Some(self.lock().image_id(rootfs)))
    }

    async fn machine_capacity(&self) -> GardenResult<(u64, u64)> {
        Ok((8192, 65536))
    }

    async fn usage(&self, handle: &str) -> GardenResult<ContainerUsage> {
        self.container_exists(handle)?;
        Ok(self.lock().usage.get(handle).copied().unwrap_or_default())
    }
}

impl FakeGarden {
    /// Starts a process playing the script of its path.
    fn start(&self, handle: &str, spec: ProcessSpec) -> GardenResult<FakeProcess> {
        self.container_exists(handle)?;
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::channel(16);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (index, script) = {
            let mut state = self.lock();
            let script = state.scripts.get(&spec.path).cloned().unwrap_or_default();
            for (path, contents) in &script.writes {
                state
                    .files
                    .insert((handle.to_string(), path.clone()), contents.clone());
            }
            state.processes.push(ProcessRecord {
                handle: handle.to_string(),
                spec,
                signals: Vec::new(),
                exit_status: None,
            });
            state.signal_senders.push(signal_tx.clone());
            (state.processes.len() - 1, script)
        };
        tokio::spawn(drive(
            self.clone(),
            index,
            script,
            signal_rx,
            output_tx,
            exit_tx,
        ));
        Ok(FakeProcess {
            garden: self.clone(),
            index,
            output: Some(output_rx),
            exit: exit_rx,
            signals: signal_tx,
        })
    }
}

/// Plays a script until it ends or a signal ends it; then closes the output
/// (before publishing the exit, as a real process's pipes close first).
async fn drive(
    garden: FakeGarden,
    index: usize,
    script: Script,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    output: mpsc::Sender<OutputChunk>,
    exit: watch::Sender<Option<i64>>,
) {
    let ignores_term = script.ignores_term;
    // Owns the output sender, so dropping it closes the output.
    let mut timeline = Box::pin(async move {
        for (delay, stream, bytes) in script.output {
            tokio::time::sleep(delay).await;
            // A reader that went away just loses the output.
            let _ = output.send(OutputChunk { stream, bytes }).await;
        }
        tokio::time::sleep(script.runtime).await;
        script.exit_status
    });
    let status = loop {
        tokio::select! {
            status = &mut timeline => break status,
            signal = signals.recv() => match signal {
                Some(Signal::Kill) => break 137,
                Some(Signal::Terminate) if !ignores_term => break 143,
                Some(Signal::Terminate) => continue,
                // The garden keeps a sender for every process, so this
                // cannot close while the process runs.
                None => break (&mut timeline).await,
            },
        }
    };
    drop(timeline);
    garden.lock().processes[index].exit_status = Some(status);
    let _ = exit.send(Some(status));
}

struct FakeProcess {
    garden: FakeGarden,
    index: usize,
    output: Option<mpsc::Receiver<OutputChunk>>,
    exit: watch::Receiver<Option<i64>>,
    signals: mpsc::UnboundedSender<Signal>,
}

#[async_trait]
impl Process for FakeProcess {
    fn output(&mut self) -> BoxStream<'static, OutputChunk> {
        match self.output.take() {
            Some(rx) => Box::pin(stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            })),
            None => Box::pin(stream::empty()),
        }
    }

    async fn wait(&mut self) -> GardenResult<i64> {
        let status = self
            .exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| GardenError::Backend("fake process vanished".into()))?;
        // wait_for only returns once the value is Some.
        Ok(status.expect("wait_for checked it is some"))
    }

    async fn signal(&self, signal: Signal) -> GardenResult<()> {
        self.garden.lock().processes[self.index]
            .signals
            .push(signal);
        // An exited process ignores signals, as a real one would be gone.
        let _ = self.signals.send(signal);
        Ok(())
    }
}

#[async_trait]
impl InteractiveProcess for FakeProcess {
    async fn resize(&self, size: TtySize) -> GardenResult<()> {
        self.garden.lock().resizes.push((self.index, size));
        Ok(())
    }
}
