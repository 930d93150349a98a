//! Semantics of the action tree, against the recording fake Garden, with
//! paused time.

use std::sync::Arc;
use std::time::Duration;

use lattice_garden::{ContainerSpec, Signal};
use lattice_models::action::*;
use lattice_models::log::MessageType;
use lattice_models::EnvironmentVariable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fake::{FakeGarden, Script};
use crate::{ActionError, CollectingSink, Executor, ExecutorConfig, RunContext};

const HANDLE: &str = "container-1";

struct Harness {
    garden: FakeGarden,
    sink: Arc<CollectingSink>,
    executor: Executor,
    _cache: tempfile::TempDir,
}

async fn harness() -> Harness {
    let garden = FakeGarden::new();
    let sink = CollectingSink::new();
    // A temporary directory outlives the test through the harness.
    let cache = tempfile::tempdir().expect("a temporary directory can be made");
    let mut config = ExecutorConfig::new("cell-1", cache.path());
    config.stop_grace = Duration::from_secs(10);
    config.kill_wait = Duration::from_secs(5);
    let executor = Executor::new(Arc::new(garden.clone()), sink.clone(), config);
    executor
        .create_container(ContainerSpec {
            handle: HANDLE.into(),
            rootfs: "docker:///busybox".into(),
            ..ContainerSpec::default()
        })
        .await
        .unwrap();
    Harness {
        garden,
        sink,
        executor,
        _cache: cache,
    }
}

fn context() -> RunContext {
    RunContext {
        log_guid: "log-guid".into(),
        log_source: "APP".into(),
        instance: "2".into(),
        env: vec![("FROM_CONTEXT".into(), "1".into())],
        disk_mb: 0,
    }
}

impl Harness {
    async fn run(&self, action: &Action) -> Result<(), ActionError> {
        self.executor
            .run(HANDLE, action, &context(), CancellationToken::new())
            .await
    }

    /// Runs `action`, cancelling it after `after`.
    async fn run_cancelled_after(
        &self,
        action: &Action,
        after: Duration,
    ) -> Result<(), ActionError> {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            trigger.cancel();
        });
        self.executor.run(HANDLE, action, &context(), cancel).await
    }

    fn signals_of(&self, path: &str) -> Vec<Signal> {
        let records = self.garden.processes_of(path);
        assert_eq!(records.len(), 1, "{path} started once");
        records[0].signals.clone()
    }

    fn exit_of(&self, path: &str) -> Option<i64> {
        self.garden.processes_of(path)[0].exit_status
    }
}

fn run(path: &str) -> Action {
    Action::run(path, &[])
}

fn serial(actions: Vec<Action>) -> Action {
    Action::Serial(SerialAction {
        actions,
        log_source: None,
    })
}

fn parallel(actions: Vec<Action>) -> Action {
    Action::Parallel(ParallelAction {
        actions,
        log_source: None,
    })
}

fn codependent(actions: Vec<Action>) -> Action {
    Action::Codependent(CodependentAction {
        actions,
        log_source: None,
    })
}

fn timeout(timeout_ms: i64, action: Action) -> Action {
    Action::Timeout(TimeoutAction {
        action: Box::new(action),
        timeout_ns: timeout_ms * 1_000_000,
        log_source: None,
    })
}

fn attempt(action: Action) -> Action {
    Action::Try(TryAction {
        action: Box::new(action),
        log_source: None,
    })
}

fn progress(action: Action) -> Action {
    Action::EmitProgress(EmitProgressAction {
        action: Box::new(action),
        start_message: Some("starting".into()),
        success_message: Some("all good".into()),
        failure_message_prefix: Some("Failed to run".into()),
        log_source: None,
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn run_streams_output_as_lines() {
    let h = harness().await;
    h.garden.script(
        "/bin/app",
        Script::exits(0)
            .stdout("hel")
            .stdout("lo\nwor")
            .stderr("oops\n")
            .stdout("ld\nno newline"),
    );
    h.run(&run("/bin/app")).await.unwrap();

    let messages = h.sink.messages();
    let out: Vec<_> = messages
        .iter()
        .filter(|m| m.message_type == MessageType::Out)
        .map(|m| m.message.as_str())
        .collect();
    let err: Vec<_> = messages
        .iter()
        .filter(|m| m.message_type == MessageType::Err)
        .map(|m| m.message.as_str())
        .collect();
    assert_eq!(out, ["hello", "world", "no newline"]);
    assert_eq!(err, ["oops"]);
    for m in &messages {
        assert_eq!(m.log_guid, "log-guid");
        assert_eq!(m.source_type, "APP");
        assert_eq!(m.source_instance, "2");
        assert!(m.timestamp > 0);
    }
}

#[tokio::test(start_paused = true)]
async fn run_cuts_long_lines_and_replaces_garbage() {
    let h = harness().await;
    let mut long = vec![b'x'; crate::MAX_LINE_BYTES + 10];
    long.extend_from_slice(b"\n\xff\xfebinary\n");
    h.garden.script("/bin/long", Script::exits(0).stdout(long));
    h.run(&run("/bin/long")).await.unwrap();
    let lines = h.sink.lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].len(), crate::MAX_LINE_BYTES);
    assert_eq!(lines[1], "x".repeat(10));
    assert_eq!(lines[2], "\u{fffd}\u{fffd}binary");
}

#[tokio::test(start_paused = true)]
async fn run_passes_its_spec() {
    let h = harness().await;
    let action = Action::Run(RunAction {
        path: "/bin/app".into(),
        args: vec!["-v".into()],
        dir: Some("/home/vcap".into()),
        env: vec![
            EnvironmentVariable::new("OWN", "a"),
            EnvironmentVariable::new("FROM_CONTEXT", "overridden"),
        ],
        user: Some("vcap".into()),
        resource_limits: Some(ResourceLimits {
            nofile: Some(1024),
            nproc: None,
        }),
        log_source: None,
        suppress_log_output: false,
    });
    h.run(&action).await.unwrap();
    let spec = &h.garden.processes_of("/bin/app")[0].spec;
    assert_eq!(spec.args, ["-v"]);
    assert_eq!(spec.dir.as_deref(), Some("/home/vcap"));
    assert_eq!(spec.user.as_deref(), Some("vcap"));
    assert_eq!(spec.nofile, Some(1024));
    // The run's variables come after the context's, so they win.
    let env: Vec<_> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(env, ["FROM_CONTEXT=1", "OWN=a", "FROM_CONTEXT=overridden"]);
}

#[tokio::test(start_paused = true)]
async fn run_failure_reasons() {
    let h = harness().await;
    h.garden.script("/bin/fail", Script::exits(3));
    let err = h.run(&run("/bin/fail")).await.unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 3");

    h.garden.script("/bin/killed", Script::exits(137));
    let err = h.run(&run("/bin/killed")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Exited with status 137",
        "not out of memory yet"
    );

    h.garden.set_oom_killed(HANDLE);
    let err = h.run(&run("/bin/killed")).await.unwrap_err();
    assert!(
        matches!(err, ActionError::OutOfMemory { status: 137 }),
        "{err}"
    );
    assert_eq!(err.to_string(), "Exited with status 137 (out of memory)");
}

#[tokio::test(start_paused = true)]
async fn run_in_missing_container_fails() {
    let h = harness().await;
    let err = h
        .executor
        .run(
            "nope",
            &run("/bin/app"),
            &context(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ActionError::Container(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn suppressed_output_is_drained_but_not_logged() {
    let h = harness().await;
    // More chunks than the fake's pipe holds: the run only ends if we read.
    let mut script = Script::exits(0);
    for i in 0..100 {
        script = script.stdout(format!("line {i}\n"));
    }
    h.garden.script("/bin/chatty", script);
    let mut action = run("/bin/chatty");
    if let Action::Run(r) = &mut action {
        r.suppress_log_output = true;
    }
    h.run(&action).await.unwrap();
    assert!(h.sink.lines().is_empty());
}

#[tokio::test(start_paused = true)]
async fn serial_stops_at_first_failure() {
    let h = harness().await;
    h.garden.script("/bin/fail", Script::exits(2));
    let err = h
        .run(&serial(vec![
            run("/bin/ok"),
            run("/bin/fail"),
            run("/bin/never"),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, ActionError::Exited { status: 2 }), "{err}");
    let started: Vec<_> = h
        .garden
        .processes()
        .into_iter()
        .map(|p| p.spec.path)
        .collect();
    assert_eq!(started, ["/bin/ok", "/bin/fail"]);
}

#[tokio::test(start_paused = true)]
async fn parallel_waits_for_all_and_joins_reasons() {
    let h = harness().await;
    h.garden.script("/bin/fail1", Script::exits(1));
    h.garden.script(
        "/bin/fail2",
        Script {
            runtime: secs(1),
            exit_status: 2,
            ..Script::default()
        },
    );
    h.garden.script("/bin/slow", Script::runs_for(secs(30)));
    let start = Instant::now();
    let err = h
        .run(&parallel(vec![
            run("/bin/fail1"),
            run("/bin/slow"),
            run("/bin/fail2"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Exited with status 1; Exited with status 2"
    );
    assert!(start.elapsed() >= secs(30), "waited for the slow one");
    assert_eq!(h.exit_of("/bin/slow"), Some(0));
    assert!(
        h.signals_of("/bin/slow").is_empty(),
        "a failure does not stop siblings"
    );
}

#[tokio::test(start_paused = true)]
async fn codependent_cancels_the_others_when_one_ends() {
    let h = harness().await;
    h.garden.script("/bin/short", Script::runs_for(secs(1)));
    h.garden.script("/bin/long", Script::runs_for(secs(100)));
    let start = Instant::now();
    h.run(&codependent(vec![run("/bin/long"), run("/bin/short")]))
        .await
        .unwrap();
    assert!(start.elapsed() < secs(2));
    assert_eq!(h.signals_of("/bin/long"), [Signal::Terminate]);
    assert_eq!(h.exit_of("/bin/long"), Some(143));
}

#[tokio::test(start_paused = true)]
async fn codependent_fails_when_the_first_to_end_failed() {
    let h = harness().await;
    h.garden.script(
        "/bin/crash",
        Script {
            runtime: secs(1),
            exit_status: 7,
            ..Script::default()
        },
    );
    h.garden.script("/bin/long", Script::runs_for(secs(100)));
    let err = h
        .run(&codependent(vec![run("/bin/long"), run("/bin/crash")]))
        .await
        .unwrap_err();
    assert!(matches!(err, ActionError::Exited { status: 7 }), "{err}");
    assert_eq!(h.signals_of("/bin/long"), [Signal::Terminate]);
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_and_kills() {
    let h = harness().await;
    h.garden
        .script("/bin/stubborn", Script::runs_for(secs(100)).ignoring_term());
    let start = Instant::now();
    let err = h
        .run(&timeout(1000, run("/bin/stubborn")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ActionError::TimedOut { timeout_ms: 1000 }),
        "{err}"
    );
    assert_eq!(err.to_string(), "timed out after 1000 ms");
    // 1 s of timeout, then the 10 s grace between TERM and KILL.
    assert_eq!(start.elapsed().as_secs(), 11);
    assert_eq!(
        h.signals_of("/bin/stubborn"),
        [Signal::Terminate, Signal::Kill]
    );
    assert_eq!(h.exit_of("/bin/stubborn"), Some(137));
}

#[tokio::test(start_paused = true)]
async fn timeout_passes_through_an_inner_result_in_time() {
    let h = harness().await;
    h.garden.script("/bin/quick", Script::runs_for(secs(1)));
    h.run(&timeout(5000, run("/bin/quick"))).await.unwrap();
    h.garden.script("/bin/fail", Script::exits(4));
    let err = h.run(&timeout(5000, run("/bin/fail"))).await.unwrap_err();
    assert!(matches!(err, ActionError::Exited { status: 4 }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn try_ignores_failure() {
    let h = harness().await;
    h.garden.script("/bin/fail", Script::exits(1));
    h.run(&serial(vec![attempt(run("/bin/fail")), run("/bin/after")]))
        .await
        .unwrap();
    assert_eq!(h.garden.processes_of("/bin/after").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn try_does_not_ignore_cancellation() {
    let h = harness().await;
    h.garden.script("/bin/long", Script::runs_for(secs(100)));
    let err = h
        .run_cancelled_after(
            &serial(vec![attempt(run("/bin/long")), run("/bin/after")]),
            secs(1),
        )
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(h.garden.processes_of("/bin/after").is_empty());

    // At the top, where no later step would notice the cancellation.
    let err = h
        .run_cancelled_after(&attempt(run("/bin/long")), secs(1))
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn emit_progress_messages() {
    let h = harness().await;
    h.run(&progress(run("/bin/ok"))).await.unwrap();
    assert_eq!(h.sink.lines(), ["starting", "all good"]);

    let h = harness().await;
    h.garden
        .script("/bin/fail", Script::exits(1).stdout("bad input\n"));
    h.run(&progress(run("/bin/fail"))).await.unwrap_err();
    let messages = h.sink.messages();
    let lines: Vec<_> = messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(
        lines,
        [
            "starting",
            "bad input",
            "Failed to run: Exited with status 1"
        ]
    );
    assert_eq!(messages[2].message_type, MessageType::Err);

    let h = harness().await;
    h.garden.script("/bin/long", Script::runs_for(secs(100)));
    let err = h
        .run_cancelled_after(&progress(run("/bin/long")), secs(1))
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(
        h.sink.lines(),
        ["starting"],
        "no failure message for a cancellation"
    );
}

#[tokio::test(start_paused = true)]
async fn log_source_applies_to_the_subtree() {
    let h = harness().await;
    h.garden
        .script("/bin/a", Script::exits(0).stdout("from a\n"));
    h.garden
        .script("/bin/b", Script::exits(0).stdout("from b\n"));
    let mut own = run("/bin/b");
    if let Action::Run(r) = &mut own {
        r.log_source = Some("HEALTH".into());
    }
    let action = Action::Serial(SerialAction {
        actions: vec![run("/bin/a"), own],
        log_source: Some("STG".into()),
    });
    h.run(&action).await.unwrap();
    let sources: Vec<_> = h
        .sink
        .messages()
        .into_iter()
        .map(|m| (m.message, m.source_type))
        .collect();
    assert_eq!(
        sources,
        [
            ("from a".to_string(), "STG".to_string()),
            ("from b".into(), "HEALTH".into())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_reaches_every_process() {
    let h = harness().await;
    let paths = ["/bin/p1", "/bin/p2", "/bin/p3", "/bin/p4", "/bin/p5"];
    for path in paths {
        h.garden.script(path, Script::runs_for(secs(1000)));
    }
    h.garden
        .script("/bin/p5", Script::runs_for(secs(1000)).ignoring_term());
    let tree = parallel(vec![
        run("/bin/p1"),
        serial(vec![run("/bin/p2"), run("/bin/never")]),
        codependent(vec![run("/bin/p3"), attempt(run("/bin/p4"))]),
        timeout(1_000_000, progress(run("/bin/p5"))),
    ]);
    let start = Instant::now();
    let err = h.run_cancelled_after(&tree, secs(1)).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    // p5 ignores TERM: the run waits for the grace period, then kills it.
    assert_eq!(start.elapsed().as_secs(), 11);
    for path in &paths[..4] {
        assert_eq!(h.signals_of(path), [Signal::Terminate], "{path}");
        assert_eq!(h.exit_of(path), Some(143), "{path}");
    }
    assert_eq!(h.signals_of("/bin/p5"), [Signal::Terminate, Signal::Kill]);
    assert_eq!(h.exit_of("/bin/p5"), Some(137));
    assert!(h.garden.processes_of("/bin/never").is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelled_before_start_runs_nothing() {
    let h = harness().await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = h
        .executor
        .run(HANDLE, &run("/bin/app"), &context(), cancel)
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
    assert!(h.garden.processes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn containers_carry_the_owner() {
    let h = harness().await;
    let spec = &h.garden.created()[0];
    assert_eq!(
        spec.properties
            .get(lattice_garden::OWNER_PROPERTY)
            .map(String::as_str),
        Some("cell-1")
    );
    let owned = h.executor.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1);
    h.executor.destroy(HANDLE).await.unwrap();
    assert!(h.executor.list_owned().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn read_file_returns_the_first_bytes() {
    let h = harness().await;
    h.garden
        .put_file(HANDLE, "/tmp/result.json", "{\"ok\":true}");
    let text = h
        .executor
        .read_file(HANDLE, "/tmp/result.json", crate::RESULT_FILE_MAX_BYTES)
        .await
        .unwrap();
    assert_eq!(text, "{\"ok\":true}");

    h.garden.put_file(HANDLE, "/tmp/big", vec![b'a'; 200_000]);
    let text = h.executor.read_file(HANDLE, "/tmp/big", 10).await.unwrap();
    assert_eq!(text, "aaaaaaaaaa");

    let err = h
        .executor
        .read_file(HANDLE, "/tmp/missing", 10)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::FileError::Container(_)), "{err}");
}
