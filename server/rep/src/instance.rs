//! One LRP instance's lifecycle on this cell, as a pure state machine.
//!
//! ```text
//!  Creating ─▶ SettingUp ─▶ Starting ─(first check passes)─▶ Marking ─▶ Running
//!     │            │           │  (start deadline: crash)      │          │ (cancel)
//!     └────────────┴───────────┴───────────────────────────────┴──────────┴─▶ Draining
//!                  stop what runs ─▶ Stopping ─(it exited)─▶ Ended {Crashed | Stopped}
//!  Adopted (a container a previous run of the cell left): probe, check, ... ─▶ Ended
//! ```
//!
//! [`step`] takes the state, one [`Event`] (what the I/O shell in `lrps`
//! saw) and `now`, and returns the next state and the [`Effect`]s the shell
//! performs, in order. Time is passed in as the time since the shell began
//! supervising the instance; nothing here reads a clock or does I/O.
//!
//! # Guarantees
//! - Every path ends in exactly one [`InstanceState::Ended`], whose effects
//!   record it exactly once: a crash ([`Effect::RecordCrash`]) or a hand-back
//!   ([`Effect::GiveBack`]), then [`Effect::Destroy`].
//! - An instance cancelled before it failed is stopped, never recorded as
//!   crashed; a RUNNING one keeps serving for the drain delay first.
//! - An instance is marked RUNNING at most once, after its first passing
//!   health check (at once without a monitor).
//! - The start deadline crashes only an instance that never passed a check.
//!
//! # Assumptions
//! The shell performs [`Effect::CreateContainer`], [`Effect::MarkRunning`]
//! and [`Effect::Probe`] to completion and reports their result before any
//! other event.

use std::time::Duration;

/// What an instance is being run with; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub has_setup: bool,
    pub has_monitor: bool,
    /// The monitor, run while starting, keeps trying by itself until the
    /// instance is healthy (our healthcheck with `--until-ready-interval`):
    /// it is started with the action instead of a starting interval later.
    pub startup_check_waits: bool,
    /// How long it may take to pass its first check; `None`: no limit.
    pub start_timeout: Option<Duration>,
    /// Between checks until the first one passes (a user waits for it).
    pub starting_interval: Duration,
    /// Between checks of a RUNNING instance.
    pub running_interval: Duration,
    /// Between probes of an adopted instance's processes.
    pub adopted_probe_interval: Duration,
    /// How long a RUNNING instance that stops keeps serving.
    pub drain_delay: Duration,
}

/// Where an instance is; times are since supervision began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Its container is being created.
    Creating,
    /// The setup action runs.
    SettingUp,
    /// The action runs; no health check has passed yet.
    Starting {
        since: Duration,
        deadline: Option<Duration>,
        checking: bool,
    },
    /// Its first check passed; the store is told it is RUNNING.
    Marking,
    /// RUNNING (in the store too).
    Running {
        since: Duration,
        checking: bool,
    },
    /// Left running by a previous run of the cell: its processes are probed
    /// and it is checked from `check_due` on.
    Adopted {
        since: Duration,
        check_due: Duration,
        checking: bool,
    },
    /// Cancelled while RUNNING: keeps serving until the drain delay is
    /// over, so that routers drop it first.
    Draining {
        action_runs: bool,
    },
    /// Its setup or action was told to stop; ends as `outcome` once it has.
    Stopping {
        outcome: Ended,
    },
    Ended(Ended),
}

/// How an instance ended on this cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The process exited, the monitor failed, or it never became healthy.
    Crashed { reason: String, ran_for: Duration },
    /// The instance is no longer ours (retired, restarted, cell stopping).
    Stopped,
}

/// How a setup, action or health check run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Succeeded,
    Failed(String),
    Cancelled,
}

/// What a probe of an adopted instance's container found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Running, with a process the previous run left.
    Alive,
    /// The container stopped, or its processes are all gone.
    Exited { oom_killed: bool },
    /// The container no longer exists.
    Gone,
    /// The engine could not tell; taken as alive until the next probe.
    Unknown,
}

/// What the shell saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ContainerCreated,
    CreateFailed(String),
    SetupExited(Exit),
    ActionExited(Exit),
    CheckExited(Exit),
    /// The engine reported the container dead (its init's status, if known).
    ContainerDied(Option<i64>),
    /// The time of a [`Effect::ScheduleTick`] came.
    Tick,
    /// The instance is no longer this cell's to run.
    Cancelled,
    /// Whether the store took the instance as RUNNING (false: no longer ours).
    MarkedRunning(bool),
    DrainDelayOver,
    Probed(Probe),
}

/// What the shell does, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    CreateContainer,
    RunSetup,
    StopSetup,
    StartAction,
    StopAction,
    RunCheck,
    /// The check of a starting instance: the same check, but it may keep
    /// trying until it passes (within its own timeout), so a start costs
    /// one check process rather than one per try.
    RunStartupCheck,
    StopCheck,
    /// [`Event::Tick`] after this long; replaces any timer set before.
    ScheduleTick(Duration),
    /// [`Event::DrainDelayOver`] after this long; replaces any timer.
    WaitDrainDelay(Duration),
    MarkRunning,
    /// Looks at an adopted instance's container ([`Event::Probed`]).
    Probe,
    /// A line for the instance's log stream (source CELL).
    Log(String),
    /// Frees the instance's key (its resources stay held until
    /// [`Effect::Destroy`]), so a replacement can be placed here at once.
    Retire,
    RecordCrash {
        reason: String,
        ran_for: Duration,
    },
    /// Hands the instance back to the auction.
    GiveBack,
    /// Destroys the container and frees what it held.
    Destroy,
}

/// A new instance: create its container.
pub fn create() -> (InstanceState, Vec<Effect>) {
    (InstanceState::Creating, vec![Effect::CreateContainer])
}

/// An instance a previous run of the cell left running, adopted at `now`:
/// probed at once, and checked at once when it has a monitor.
pub fn adopt(now: Duration) -> (InstanceState, Vec<Effect>) {
    let state = InstanceState::Adopted {
        since: now,
        check_due: now,
        checking: false,
    };
    (state, vec![Effect::Probe])
}

/// The next state and what to do, on `event` at `now`.
pub fn step(
    plan: &Plan,
    state: InstanceState,
    event: Event,
    now: Duration,
) -> (InstanceState, Vec<Effect>) {
    use InstanceState as S;
    match (state, event) {
        (state @ S::Ended(_), _) => (state, Vec::new()),

        (S::Creating, Event::ContainerCreated) => {
            let created = Effect::Log("Successfully created container".to_string());
            if plan.has_setup {
                (S::SettingUp, vec![created, Effect::RunSetup])
            } else {
                start_action(plan, now, vec![created])
            }
        }
        (S::Creating, Event::CreateFailed(err)) => end(
            vec![],
            crashed(format!("failed to create container: {err}"), Duration::ZERO),
        ),
        (S::Creating, Event::ContainerDied(status)) => end(vec![], died(status, Duration::ZERO)),
        // Creation runs to completion (see the module's assumptions).
        (S::Creating, Event::Cancelled) => end(vec![], Ended::Stopped),
        (state @ S::Creating, _) => (state, Vec::new()),

        (S::SettingUp, Event::SetupExited(Exit::Succeeded)) => start_action(plan, now, vec![]),
        (S::SettingUp, Event::SetupExited(Exit::Failed(err))) => end(
            vec![],
            crashed(format!("setup failed: {err}"), Duration::ZERO),
        ),
        (S::SettingUp, Event::SetupExited(Exit::Cancelled)) => end(vec![], Ended::Stopped),
        (S::SettingUp, Event::Cancelled) => stopping(vec![Effect::StopSetup], Ended::Stopped),
        (S::SettingUp, Event::ContainerDied(status)) => {
            end(vec![Effect::StopSetup], died(status, Duration::ZERO))
        }
        (state @ S::SettingUp, _) => (state, Vec::new()),

        (
            S::Starting {
                since,
                deadline,
                checking,
            },
            event,
        ) => starting(plan, since, deadline, checking, event, now),

        (S::Marking, Event::MarkedRunning(true)) => {
            let state = S::Running {
                since: now,
                checking: false,
            };
            // Without a monitor there is nothing left to check.
            let effects = if plan.has_monitor {
                vec![Effect::ScheduleTick(plan.running_interval)]
            } else {
                vec![]
            };
            (state, effects)
        }
        (S::Marking, Event::MarkedRunning(false)) => {
            stopping(vec![Effect::StopAction], Ended::Stopped)
        }
        (S::Marking, Event::ActionExited(exit)) => action_exited(vec![], exit, Duration::ZERO),
        (S::Marking, Event::ContainerDied(status)) => {
            end(vec![Effect::StopAction], died(status, Duration::ZERO))
        }
        (S::Marking, Event::Cancelled) => stopping(vec![Effect::StopAction], Ended::Stopped),
        (state @ S::Marking, _) => (state, Vec::new()),

        (S::Running { since, checking }, event) => running(plan, since, checking, event, now),

        (
            S::Adopted {
                since,
                check_due,
                checking,
            },
            event,
        ) => adopted(plan, since, check_due, checking, event, now),

        (S::Draining { action_runs: true }, Event::DrainDelayOver) => {
            stopping(vec![Effect::StopAction], Ended::Stopped)
        }
        (S::Draining { action_runs: false }, Event::DrainDelayOver) => end(vec![], Ended::Stopped),
        // Nothing is left to serve.
        (S::Draining { .. }, Event::ActionExited(_)) => end(vec![], Ended::Stopped),
        (S::Draining { action_runs }, Event::ContainerDied(_)) => {
            end(stop_action_if(action_runs), Ended::Stopped)
        }
        (state @ S::Draining { .. }, _) => (state, Vec::new()),

        (S::Stopping { outcome }, Event::SetupExited(_) | Event::ActionExited(_)) => {
            end(vec![], outcome)
        }
        // What was stopped may not notice a dead container; destroying it
        // ends it.
        (S::Stopping { outcome }, Event::ContainerDied(_)) => end(vec![], outcome),
        (state @ S::Stopping { .. }, _) => (state, Vec::new()),
    }
}

fn starting(
    plan: &Plan,
    since: Duration,
    deadline: Option<Duration>,
    checking: bool,
    event: Event,
    now: Duration,
) -> (InstanceState, Vec<Effect>) {
    let this = |checking| InstanceState::Starting {
        since,
        deadline,
        checking,
    };
    match event {
        Event::Tick if deadline.is_some_and(|d| now >= d) => stopping(
            stop_check_if(checking, Some(Effect::StopAction)),
            crashed(
                format!(
                    "instance did not become healthy within the start timeout of {} s",
                    plan.start_timeout.unwrap_or_default().as_secs()
                ),
                Duration::ZERO,
            ),
        ),
        Event::Tick if checking => (this(true), vec![]),
        Event::Tick if plan.has_monitor => (this(true), vec![Effect::RunStartupCheck]),
        Event::Tick => (InstanceState::Marking, vec![Effect::MarkRunning]),
        Event::CheckExited(Exit::Succeeded) => (
            InstanceState::Marking,
            vec![
                Effect::Log("Container became healthy".to_string()),
                Effect::MarkRunning,
            ],
        ),
        // Still starting: keep checking until the deadline.
        Event::CheckExited(Exit::Failed(_)) => (
            this(false),
            vec![Effect::ScheduleTick(plan.starting_interval)],
        ),
        Event::CheckExited(Exit::Cancelled) => stopping(vec![Effect::StopAction], Ended::Stopped),
        Event::Cancelled => stopping(
            stop_check_if(checking, Some(Effect::StopAction)),
            Ended::Stopped,
        ),
        Event::ActionExited(exit) => {
            action_exited(stop_check_if(checking, None), exit, Duration::ZERO)
        }
        Event::ContainerDied(status) => end(
            stop_check_if(checking, Some(Effect::StopAction)),
            died(status, Duration::ZERO),
        ),
        _ => (this(checking), vec![]),
    }
}

fn running(
    plan: &Plan,
    since: Duration,
    checking: bool,
    event: Event,
    now: Duration,
) -> (InstanceState, Vec<Effect>) {
    let this = |checking| InstanceState::Running { since, checking };
    let ran_for = now.saturating_sub(since);
    match event {
        Event::Tick if plan.has_monitor && !checking => (this(true), vec![Effect::RunCheck]),
        Event::CheckExited(Exit::Succeeded) => (
            this(false),
            vec![Effect::ScheduleTick(plan.running_interval)],
        ),
        Event::CheckExited(Exit::Failed(err)) => stopping(
            vec![Effect::StopAction],
            crashed(format!("instance became unhealthy: {err}"), ran_for),
        ),
        Event::CheckExited(Exit::Cancelled) => stopping(vec![Effect::StopAction], Ended::Stopped),
        Event::Cancelled => {
            let mut effects = stop_check_if(checking, None);
            effects.push(Effect::WaitDrainDelay(plan.drain_delay));
            (InstanceState::Draining { action_runs: true }, effects)
        }
        Event::ActionExited(exit) => action_exited(stop_check_if(checking, None), exit, ran_for),
        Event::ContainerDied(status) => end(
            stop_check_if(checking, Some(Effect::StopAction)),
            died(status, ran_for),
        ),
        _ => (this(checking), vec![]),
    }
}

fn adopted(
    plan: &Plan,
    since: Duration,
    check_due: Duration,
    checking: bool,
    event: Event,
    now: Duration,
) -> (InstanceState, Vec<Effect>) {
    let this = |check_due, checking| InstanceState::Adopted {
        since,
        check_due,
        checking,
    };
    let ran_for = now.saturating_sub(since);
    let probe_later = Effect::ScheduleTick(plan.adopted_probe_interval);
    match event {
        Event::Tick if !checking => (this(check_due, false), vec![Effect::Probe]),
        Event::Probed(Probe::Alive | Probe::Unknown) => {
            if plan.has_monitor && !checking && now >= check_due {
                (this(check_due, true), vec![Effect::RunCheck])
            } else {
                (this(check_due, checking), vec![probe_later])
            }
        }
        Event::Probed(Probe::Exited { oom_killed }) => {
            let reason = if oom_killed {
                "out of memory (the cell had restarted)"
            } else {
                "exited (the cell had restarted; its exit status is not known)"
            };
            end(stop_check_if(checking, None), crashed(reason, ran_for))
        }
        Event::Probed(Probe::Gone) => end(
            stop_check_if(checking, None),
            crashed("its container is gone", ran_for),
        ),
        Event::CheckExited(Exit::Succeeded) => {
            (this(now + plan.running_interval, false), vec![probe_later])
        }
        Event::CheckExited(Exit::Failed(err)) => end(
            vec![],
            crashed(format!("instance became unhealthy: {err}"), ran_for),
        ),
        Event::CheckExited(Exit::Cancelled) => end(vec![], Ended::Stopped),
        Event::Cancelled => {
            let mut effects = stop_check_if(checking, None);
            effects.push(Effect::WaitDrainDelay(plan.drain_delay));
            (InstanceState::Draining { action_runs: false }, effects)
        }
        Event::ContainerDied(status) => end(stop_check_if(checking, None), died(status, ran_for)),
        _ => (this(check_due, checking), vec![]),
    }
}

/// Starts the action after `before`, and the checks that follow it.
fn start_action(
    plan: &Plan,
    now: Duration,
    mut before: Vec<Effect>,
) -> (InstanceState, Vec<Effect>) {
    before.push(Effect::StartAction);
    if plan.has_monitor {
        before.push(Effect::Log(
            "Starting health monitoring of container".to_string(),
        ));
    }
    let checking = plan.has_monitor && plan.startup_check_waits;
    if checking {
        before.push(Effect::RunStartupCheck);
    }
    before.push(Effect::ScheduleTick(plan.starting_interval));
    let state = InstanceState::Starting {
        since: now,
        deadline: plan.start_timeout.map(|timeout| now + timeout),
        checking,
    };
    (state, before)
}

/// The action ended by itself: a crash, unless it was cancelled.
fn action_exited(
    before: Vec<Effect>,
    exit: Exit,
    ran_for: Duration,
) -> (InstanceState, Vec<Effect>) {
    let ended = match exit {
        Exit::Succeeded => crashed("Exited with status 0", ran_for),
        Exit::Failed(reason) => crashed(reason, ran_for),
        Exit::Cancelled => Ended::Stopped,
    };
    end(before, ended)
}

fn died(status: Option<i64>, ran_for: Duration) -> Ended {
    let reason = match status {
        Some(status) => format!("Exited with status {status} (its container died)"),
        None => "its container died".to_string(),
    };
    crashed(reason, ran_for)
}

fn crashed(reason: impl Into<String>, ran_for: Duration) -> Ended {
    Ended::Crashed {
        reason: reason.into(),
        ran_for,
    }
}

/// `StopCheck` when a check runs, then `then`.
fn stop_check_if(checking: bool, then: Option<Effect>) -> Vec<Effect> {
    checking
        .then_some(Effect::StopCheck)
        .into_iter()
        .chain(then)
        .collect()
}

fn stop_action_if(action_runs: bool) -> Vec<Effect> {
    action_runs
        .then_some(Effect::StopAction)
        .into_iter()
        .collect()
}

fn stopping(effects: Vec<Effect>, outcome: Ended) -> (InstanceState, Vec<Effect>) {
    (InstanceState::Stopping { outcome }, effects)
}

/// The one way into [`InstanceState::Ended`]: `before`, then the record of
/// how it ended, then the container's destruction.
fn end(mut before: Vec<Effect>, ended: Ended) -> (InstanceState, Vec<Effect>) {
    before.push(Effect::Retire);
    match &ended {
        Ended::Crashed { reason, ran_for } => {
            before.push(Effect::Log(format!("Instance crashed: {reason}")));
            before.push(Effect::RecordCrash {
                reason: reason.clone(),
                ran_for: *ran_for,
            });
        }
        Ended::Stopped => {
            before.push(Effect::Log("Stopping instance".to_string()));
            before.push(Effect::GiveBack);
        }
    }
    before.push(Effect::Destroy);
    before.push(Effect::Log("Destroyed container".to_string()));
    (InstanceState::Ended(ended), before)
}

#[cfg(test)]
mod tests;
