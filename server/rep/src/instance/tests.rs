//! Table tests of the transitions, and property tests of the guarantees on
//! a simulated cell that answers the effects at random.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn plan() -> Plan {
    Plan {
        has_setup: true,
        has_monitor: true,
        startup_check_waits: false,
        start_timeout: Some(60 * SEC),
        starting_interval: 50 * MS,
        running_interval: 10 * SEC,
        adopted_probe_interval: SEC,
        drain_delay: 2 * SEC,
    }
}

fn log(line: &str) -> Effect {
    Effect::Log(line.to_string())
}

/// The effects of ending as `ended`, after `before`.
fn ends(before: Vec<Effect>, ended: &Ended) -> Vec<Effect> {
    let mut effects = before;
    effects.push(Effect::Retire);
    match ended {
        Ended::Crashed { reason, ran_for } => {
            effects.push(log(&format!("Instance crashed: {reason}")));
            effects.push(Effect::RecordCrash {
                reason: reason.clone(),
                ran_for: *ran_for,
            });
        }
        Ended::Stopped => {
            effects.push(log("Stopping instance"));
            effects.push(Effect::GiveBack);
        }
    }
    effects.push(Effect::Destroy);
    effects.push(log("Destroyed container"));
    effects
}

fn crashed(reason: &str, ran_for: Duration) -> Ended {
    Ended::Crashed {
        reason: reason.to_string(),
        ran_for,
    }
}

fn starting(checking: bool) -> InstanceState {
    InstanceState::Starting {
        since: SEC,
        deadline: Some(61 * SEC),
        checking,
    }
}

fn running(checking: bool) -> InstanceState {
    InstanceState::Running {
        since: 5 * SEC,
        checking,
    }
}

fn adopted(checking: bool) -> InstanceState {
    InstanceState::Adopted {
        since: Duration::ZERO,
        check_due: 10 * SEC,
        checking,
    }
}

fn stopping(outcome: Ended) -> InstanceState {
    InstanceState::Stopping { outcome }
}

/// A name, a state, an event at a time, and the state and effects that follow.
type Row = (
    &'static str,
    InstanceState,
    Event,
    Duration,
    InstanceState,
    Vec<Effect>,
);

#[test]
fn every_transition_of_the_table() {
    use Effect as E;
    use Event as V;
    use InstanceState as S;
    let failed = |reason: &str| Exit::Failed(reason.to_string());
    let unhealthy = crashed("instance became unhealthy: refused", 7 * SEC);
    let timed_out = crashed(
        "instance did not become healthy within the start timeout of 60 s",
        Duration::ZERO,
    );
    let rows: Vec<Row> = vec![
        (
            "created, with a setup",
            S::Creating,
            V::ContainerCreated,
            SEC,
            S::SettingUp,
            vec![log("Successfully created container"), E::RunSetup],
        ),
        (
            "create failed",
            S::Creating,
            V::CreateFailed("no room".into()),
            SEC,
            S::Ended(crashed(
                "failed to create container: no room",
                Duration::ZERO,
            )),
            ends(
                vec![],
                &crashed("failed to create container: no room", Duration::ZERO),
            ),
        ),
        (
            "setup done: the action starts, checked at the starting interval",
            S::SettingUp,
            V::SetupExited(Exit::Succeeded),
            SEC,
            starting(false),
            vec![
                E::StartAction,
                log("Starting health monitoring of container"),
                E::ScheduleTick(50 * MS),
            ],
        ),
        (
            "setup failed",
            S::SettingUp,
            V::SetupExited(failed("exit 1")),
            SEC,
            S::Ended(crashed("setup failed: exit 1", Duration::ZERO)),
            ends(vec![], &crashed("setup failed: exit 1", Duration::ZERO)),
        ),
        (
            "cancelled in setup: the setup stops first",
            S::SettingUp,
            V::Cancelled,
            SEC,
            stopping(Ended::Stopped),
            vec![E::StopSetup],
        ),
        (
            "the setup stopped",
            stopping(Ended::Stopped),
            V::SetupExited(Exit::Cancelled),
            SEC,
            S::Ended(Ended::Stopped),
            ends(vec![], &Ended::Stopped),
        ),
        (
            "a starting tick runs the check",
            starting(false),
            V::Tick,
            2 * SEC,
            starting(true),
            vec![E::RunStartupCheck],
        ),
        (
            "a failed check while starting: check again soon",
            starting(true),
            V::CheckExited(failed("refused")),
            2 * SEC,
            starting(false),
            vec![E::ScheduleTick(50 * MS)],
        ),
        (
            "the first passing check marks it running",
            starting(true),
            V::CheckExited(Exit::Succeeded),
            2 * SEC,
            S::Marking,
            vec![log("Container became healthy"), E::MarkRunning],
        ),
        (
            "the start deadline crashes a never-healthy instance",
            starting(false),
            V::Tick,
            61 * SEC,
            stopping(timed_out.clone()),
            vec![E::StopAction],
        ),
        (
            "the action exits while starting",
            starting(true),
            V::ActionExited(Exit::Succeeded),
            2 * SEC,
            S::Ended(crashed("Exited with status 0", Duration::ZERO)),
            ends(
                vec![E::StopCheck],
                &crashed("Exited with status 0", Duration::ZERO),
            ),
        ),
        (
            "cancelled while starting: no drain, nothing routes to it",
            starting(true),
            V::Cancelled,
            2 * SEC,
            stopping(Ended::Stopped),
            vec![E::StopCheck, E::StopAction],
        ),
        (
            "marked running: checked at the running interval",
            S::Marking,
            V::MarkedRunning(true),
            5 * SEC,
            running(false),
            vec![E::ScheduleTick(10 * SEC)],
        ),
        (
            "no longer ours when marking",
            S::Marking,
            V::MarkedRunning(false),
            5 * SEC,
            stopping(Ended::Stopped),
            vec![E::StopAction],
        ),
        (
            "a running tick runs the check",
            running(false),
            V::Tick,
            15 * SEC,
            running(true),
            vec![E::RunCheck],
        ),
        (
            "a passing check while running",
            running(true),
            V::CheckExited(Exit::Succeeded),
            15 * SEC,
            running(false),
            vec![E::ScheduleTick(10 * SEC)],
        ),
        (
            "a failed check while running crashes it",
            running(true),
            V::CheckExited(failed("refused")),
            12 * SEC,
            stopping(unhealthy.clone()),
            vec![E::StopAction],
        ),
        (
            "the action exits while running",
            running(false),
            V::ActionExited(failed("Exited with status 2")),
            12 * SEC,
            S::Ended(crashed("Exited with status 2", 7 * SEC)),
            ends(vec![], &crashed("Exited with status 2", 7 * SEC)),
        ),
        (
            "the container died while running",
            running(true),
            V::ContainerDied(Some(137)),
            12 * SEC,
            S::Ended(crashed(
                "Exited with status 137 (its container died)",
                7 * SEC,
            )),
            ends(
                vec![E::StopCheck, E::StopAction],
                &crashed("Exited with status 137 (its container died)", 7 * SEC),
            ),
        ),
        (
            "cancelled while running: drain first",
            running(true),
            V::Cancelled,
            12 * SEC,
            S::Draining { action_runs: true },
            vec![E::StopCheck, E::WaitDrainDelay(2 * SEC)],
        ),
        (
            "drained: the action stops",
            S::Draining { action_runs: true },
            V::DrainDelayOver,
            14 * SEC,
            stopping(Ended::Stopped),
            vec![E::StopAction],
        ),
        (
            "the action ends while draining: a stop, not a crash",
            S::Draining { action_runs: true },
            V::ActionExited(failed("Exited with status 1")),
            13 * SEC,
            S::Ended(Ended::Stopped),
            ends(vec![], &Ended::Stopped),
        ),
        (
            "stopped after a crash was decided: the crash is recorded",
            stopping(unhealthy.clone()),
            V::ActionExited(Exit::Cancelled),
            13 * SEC,
            S::Ended(unhealthy.clone()),
            ends(vec![], &unhealthy),
        ),
        (
            "a late cancel does not undo a decided crash",
            stopping(unhealthy.clone()),
            V::Cancelled,
            13 * SEC,
            stopping(unhealthy.clone()),
            vec![],
        ),
        (
            "an adopted instance alive, its check not due",
            adopted(false),
            V::Probed(Probe::Alive),
            SEC,
            adopted(false),
            vec![E::ScheduleTick(SEC)],
        ),
        (
            "an adopted instance alive, its check due",
            adopted(false),
            V::Probed(Probe::Unknown),
            10 * SEC,
            adopted(true),
            vec![E::RunCheck],
        ),
        (
            "an adopted instance's check passed: the next is due later",
            adopted(true),
            V::CheckExited(Exit::Succeeded),
            11 * SEC,
            InstanceState::Adopted {
                since: Duration::ZERO,
                check_due: 21 * SEC,
                checking: false,
            },
            vec![E::ScheduleTick(SEC)],
        ),
        (
            "an adopted instance's processes are gone",
            adopted(false),
            V::Probed(Probe::Exited { oom_killed: true }),
            3 * SEC,
            S::Ended(crashed("out of memory (the cell had restarted)", 3 * SEC)),
            ends(
                vec![],
                &crashed("out of memory (the cell had restarted)", 3 * SEC),
            ),
        ),
        (
            "an adopted instance cancelled: it drains, no action to stop",
            adopted(true),
            V::Cancelled,
            3 * SEC,
            S::Draining { action_runs: false },
            vec![E::StopCheck, E::WaitDrainDelay(2 * SEC)],
        ),
        (
            "an adopted instance drained",
            S::Draining { action_runs: false },
            V::DrainDelayOver,
            5 * SEC,
            S::Ended(Ended::Stopped),
            ends(vec![], &Ended::Stopped),
        ),
        (
            "nothing happens after the end",
            S::Ended(Ended::Stopped),
            V::ActionExited(failed("late")),
            5 * SEC,
            S::Ended(Ended::Stopped),
            vec![],
        ),
    ];
    for (name, state, event, now, want_state, want_effects) in rows {
        let (got_state, got_effects) = step(&plan(), state, event, now);
        assert_eq!(
            (&got_state, &got_effects),
            (&want_state, &want_effects),
            "{name}"
        );
    }
}

#[test]
fn without_setup_or_monitor_the_first_tick_marks_it_running() {
    let plan = Plan {
        has_setup: false,
        has_monitor: false,
        start_timeout: None,
        ..plan()
    };
    let (state, _) = create();
    let (state, effects) = step(&plan, state, Event::ContainerCreated, SEC);
    assert_eq!(
        effects,
        vec![
            log("Successfully created container"),
            Effect::StartAction,
            Effect::ScheduleTick(50 * MS),
        ]
    );
    let (state, effects) = step(&plan, state, Event::Tick, 2 * SEC);
    assert_eq!(effects, vec![Effect::MarkRunning], "no check to run");
    let (state, effects) = step(&plan, state, Event::MarkedRunning(true), 2 * SEC);
    assert_eq!(effects, vec![], "nothing to check while running");
    assert_eq!(
        state,
        InstanceState::Running {
            since: 2 * SEC,
            checking: false
        }
    );
}

#[test]
fn a_startup_check_that_waits_by_itself_starts_with_the_action() {
    let plan = Plan {
        has_setup: false,
        startup_check_waits: true,
        ..plan()
    };
    let (state, _) = create();
    let (state, effects) = step(&plan, state, Event::ContainerCreated, SEC);
    assert_eq!(
        effects,
        vec![
            log("Successfully created container"),
            Effect::StartAction,
            log("Starting health monitoring of container"),
            Effect::RunStartupCheck,
            Effect::ScheduleTick(50 * MS),
        ],
        "no starting interval before the first check"
    );
    assert_eq!(state, starting(true));
    let (state, effects) = step(&plan, state, Event::Tick, SEC + 50 * MS);
    assert_eq!(effects, vec![], "the check runs: no second one");
    let (state, effects) = step(&plan, state, Event::CheckExited(Exit::Succeeded), 2 * SEC);
    assert_eq!(
        (state, effects),
        (
            InstanceState::Marking,
            vec![log("Container became healthy"), Effect::MarkRunning]
        )
    );
}

// --- A simulated cell --------------------------------------------------------

/// One step the core took.
#[derive(Debug)]
struct Step {
    before: InstanceState,
    event: Event,
    now: Duration,
    after: InstanceState,
    effects: Vec<Effect>,
}

/// Answers the core's effects as a cell would, choosing outcomes from
/// `choices`, and records what the core did.
struct Cell {
    plan: Plan,
    state: InstanceState,
    now: Duration,
    setup: bool,
    action: bool,
    check: bool,
    created: bool,
    died: bool,
    cancelled: bool,
    timer: Option<(Duration, Event)>,
    /// Results of effects performed to completion, stepped on first.
    results: VecDeque<Event>,
    choices: VecDeque<u8>,
    trace: Vec<Step>,
    effects: Vec<Effect>,
}

impl Cell {
    fn new(plan: Plan, adopted: bool, choices: Vec<u8>) -> Cell {
        let (state, effects) = if adopted { adopt(SEC) } else { create() };
        let mut cell = Cell {
            plan,
            state,
            now: SEC,
            setup: false,
            action: false,
            check: false,
            created: adopted,
            died: false,
            cancelled: false,
            timer: None,
            results: VecDeque::new(),
            choices: choices.into(),
            trace: Vec::new(),
            effects: Vec::new(),
        };
        cell.perform(effects);
        cell.step_on_results();
        cell
    }

    fn step_on_results(&mut self) {
        while let Some(result) = self.results.pop_front() {
            self.deliver(result);
        }
    }

    fn choose(&mut self, options: usize) -> usize {
        usize::from(self.choices.pop_front().unwrap_or(0)) % options.max(1)
    }

    fn exit(&mut self) -> Exit {
        match self.choose(5) {
            0 => Exit::Cancelled,
            1 | 2 => Exit::Failed("boom".to_string()),
            _ => Exit::Succeeded,
        }
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in &effects {
            match effect {
                Effect::CreateContainer => {
                    let created = self.choose(4) != 0;
                    self.created = created;
                    self.results.push_back(if created {
                        Event::ContainerCreated
                    } else {
                        Event::CreateFailed("no room".to_string())
                    });
                }
                Effect::RunSetup => {
                    assert!(!self.setup, "setup started twice");
                    self.setup = true;
                }
                Effect::StartAction => {
                    assert!(!self.action, "action started twice");
                    self.action = true;
                }
                Effect::RunCheck | Effect::RunStartupCheck => {
                    assert!(!self.check, "a check started while one runs");
                    self.check = true;
                }
                Effect::StopCheck => {
                    assert!(self.check, "stopped a check that does not run");
                    self.check = false;
                }
                Effect::StopSetup => assert!(self.setup, "stopped a setup that does not run"),
                Effect::StopAction => {
                    assert!(self.action, "stopped an action that does not run")
                }
                Effect::ScheduleTick(after) => self.timer = Some((self.now + *after, Event::Tick)),
                Effect::WaitDrainDelay(after) => {
                    self.timer = Some((self.now + *after, Event::DrainDelayOver))
                }
                Effect::MarkRunning => {
                    let marked = self.choose(5) != 0;
                    self.results.push_back(Event::MarkedRunning(marked));
                }
                Effect::Probe => {
                    let probe = match self.choose(6) {
                        0 => Probe::Gone,
                        1 => Probe::Exited { oom_killed: false },
                        2 => Probe::Unknown,
                        _ => Probe::Alive,
                    };
                    self.results.push_back(Event::Probed(probe));
                }
                Effect::Log(_)
                | Effect::Retire
                | Effect::RecordCrash { .. }
                | Effect::GiveBack
                | Effect::Destroy => {}
            }
        }
        self.effects.extend(effects);
    }

    /// What may happen next, given what runs; weighted so that most runs
    /// get as far as RUNNING before they end.
    fn possible(&self) -> Vec<&'static str> {
        let mut events = Vec::new();
        let mut add = |what, weight| events.extend(std::iter::repeat_n(what, weight));
        if self.setup {
            add("setup", 2);
        }
        if self.action {
            add("action", 1);
        }
        if self.check {
            add("check", 4);
        }
        if self.timer.is_some() {
            add("timer", 4);
        }
        if self.created && !self.died {
            add("died", 1);
        }
        if !self.cancelled {
            add("cancel", 1);
        }
        events
    }

    fn happen(&mut self, what: &str) {
        let event = match what {
            "setup" => {
                self.setup = false;
                Event::SetupExited(self.exit())
            }
            "action" => {
                self.action = false;
                Event::ActionExited(self.exit())
            }
            "check" => {
                self.check = false;
                Event::CheckExited(self.exit())
            }
            "timer" => {
                let (at, event) = self.timer.take().expect("a timer is set");
                self.now = self.now.max(at);
                event
            }
            "died" => {
                self.died = true;
                Event::ContainerDied(Some(137))
            }
            _ => {
                self.cancelled = true;
                Event::Cancelled
            }
        };
        self.now += MS * u32::from(self.choices.pop_front().unwrap_or(0));
        self.deliver(event);
    }

    fn deliver(&mut self, event: Event) {
        let before = self.state.clone();
        let (after, effects) = step(&self.plan, before.clone(), event.clone(), self.now);
        self.state = after.clone();
        self.trace.push(Step {
            before,
            event,
            now: self.now,
            after,
            effects: effects.clone(),
        });
        self.perform(effects);
        self.step_on_results();
    }

    fn ended(&self) -> bool {
        matches!(self.state, InstanceState::Ended(_))
    }

    /// Random events while `choices` last, then a cancel and the world
    /// finishing whatever was stopped; false if it got stuck.
    fn run(&mut self) -> bool {
        while !self.choices.is_empty() && !self.ended() {
            let possible = self.possible();
            let what = possible[self.choose(possible.len())];
            self.happen(what);
        }
        for _ in 0..20 {
            if self.ended() {
                return true;
            }
            let possible = self.possible();
            // A stopped run ends; timers fire; nothing else happens.
            let what = ["cancel", "timer", "setup", "action", "check"]
                .into_iter()
                .find(|w| possible.contains(w));
            match what {
                Some(what) => self.happen(what),
                None => return false,
            }
        }
        self.ended()
    }

    fn count(&self, matches: impl Fn(&Effect) -> bool) -> usize {
        self.effects.iter().filter(|e| matches(e)).count()
    }
}

fn any_plan() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1u64..5),
    )
        .prop_map(
            |(has_setup, has_monitor, startup_check_waits, timeout)| Plan {
                has_setup,
                has_monitor,
                startup_check_waits,
                start_timeout: timeout.map(Duration::from_secs),
                ..plan()
            },
        )
}

fn is_live(state: &InstanceState) -> bool {
    !matches!(
        state,
        InstanceState::Ended(_)
            | InstanceState::Stopping {
                outcome: Ended::Crashed { .. }
            }
    )
}

proptest! {
    #[test]
    fn every_path_ends_once(plan in any_plan(), adopted in any::<bool>(), choices in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut cell = Cell::new(plan, adopted, choices);
        prop_assert!(cell.run(), "stuck in {:?}", cell.state);
        prop_assert_eq!(cell.count(|e| *e == Effect::Retire), 1);
        prop_assert_eq!(cell.count(|e| *e == Effect::Destroy), 1);
        prop_assert_eq!(cell.count(|e| matches!(e, Effect::RecordCrash { .. } | Effect::GiveBack)), 1);
        // The end is the last step, and the only one into Ended.
        let into_ended: Vec<usize> = cell.trace.iter().enumerate()
            .filter(|(_, s)| !matches!(s.before, InstanceState::Ended(_)) && matches!(s.after, InstanceState::Ended(_)))
            .map(|(i, _)| i)
            .collect();
        prop_assert_eq!(into_ended, vec![cell.trace.len() - 1]);
    }

    #[test]
    fn a_cancelled_instance_never_records_a_crash(plan in any_plan(), adopted in any::<bool>(), choices in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut cell = Cell::new(plan, adopted, choices);
        cell.run();
        let cancelled_live = cell.trace.iter().any(|s| s.event == Event::Cancelled && is_live(&s.before));
        if cancelled_live {
            let crashed = cell.count(|e| matches!(e, Effect::RecordCrash { .. }));
            prop_assert_eq!(crashed, 0, "{:?}", cell.trace);
        }
    }

    #[test]
    fn a_running_instance_was_marked_running_once(plan in any_plan(), choices in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut cell = Cell::new(plan, false, choices);
        cell.run();
        prop_assert!(cell.count(|e| *e == Effect::MarkRunning) <= 1);
        for (i, s) in cell.trace.iter().enumerate() {
            if matches!(s.after, InstanceState::Running { .. }) && !matches!(s.before, InstanceState::Running { .. }) {
                prop_assert_eq!(&s.event, &Event::MarkedRunning(true), "step {}", i);
            }
        }
    }

    #[test]
    fn checks_are_frequent_until_the_first_passes(plan in any_plan(), choices in prop::collection::vec(any::<u8>(), 0..80)) {
        let starting = plan.starting_interval;
        let running = plan.running_interval;
        let mut cell = Cell::new(plan, false, choices);
        cell.run();
        let mut marked = false;
        for s in &cell.trace {
            marked |= s.event == Event::MarkedRunning(true);
            for effect in &s.effects {
                if let Effect::ScheduleTick(after) = effect {
                    prop_assert_eq!(*after, if marked { running } else { starting });
                }
            }
        }
    }

    #[test]
    fn the_start_deadline_crashes_only_a_never_healthy_instance(plan in any_plan(), choices in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut cell = Cell::new(plan, false, choices);
        cell.run();
        let mut healthy = false;
        for s in &cell.trace {
            let timed_out = matches!(
                &s.after,
                InstanceState::Stopping { outcome: Ended::Crashed { reason, .. } } if reason.contains("start timeout")
            );
            if timed_out {
                prop_assert!(!healthy, "a healthy instance timed out");
                let InstanceState::Starting { deadline: Some(deadline), .. } = s.before else {
                    return Err(TestCaseError::fail(format!("timed out from {:?}", s.before)));
                };
                prop_assert!(s.now >= deadline);
            }
            healthy |= s.effects.contains(&Effect::MarkRunning);
        }
    }
}
