//! Spare containers: started, empty containers of an app that a cell keeps
//! ready, one per [`INSTANCES_PER_SPARE`] of its instances there (at least
//! one, at most [`RepConfig::spare_containers`](crate::RepConfig); `lattice`
//! keeps up to 3 unless told otherwise), so that the next instances of the
//! app the cell wins (crashed ones started again, a scale-up) run in
//! containers that are already up instead of waiting for the engine to
//! create and start them: 400-800 ms each of a busy 2-core machine's
//! engine, most of a heal (docs/performance.md).
//!
//! # Guarantees
//! - A spare is made from the app's desired LRP as its instances'
//!   containers are, under a fresh instance guid and handle, and nothing
//!   runs in it before an instance takes it: that instance starts as fresh
//!   as in a container made for it.
//! - An instance takes a spare only while the engine's id of the app's
//!   image is the one the spare was made from: an image rebuilt under the
//!   same name reaches it in a fresh container (`lrps`), and the app's
//!   other spares go at once, to be made again from the new build.
//! - A spare is made for one definition of the app (its desired LRP's
//!   epoch); an instance of an app deleted and desired again under the same
//!   guid never runs in a spare of the old one.
//! - The cell keeps at most [`RepConfig::spare_containers_per_cell`](crate::RepConfig)
//!   spares in all; apps that want one beyond that go without.
//! - Spares are made one at a time on the cell, each only once no
//!   container has been created there for [`QUIET`], so that they seldom
//!   compete with an instance's start for the engine.
//! - [`LINGER`] after an instance of an app ended on the cell, the app's
//!   spares beyond those it wants then are destroyed (all of them when the
//!   cell runs none of its instances); all spares when the cell stops. One left by a
//!   previous run of the cell matches no RUNNING instance and is destroyed
//!   at restart (`restart`).
//! - Spares hold none of the cell's capacity: an empty container uses next
//!   to nothing until an instance, which holds its own, runs in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lattice_garden::ContainerInfo;
use lattice_models::DesiredLrp;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{clock, lrps, Rep};

/// How long the cell must have created no container before a spare is
/// made.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// How long an app's spares outlive the instances that wanted them: a
/// crashed instance ends (its container destroyed) before or after its
/// replacement is placed here, and that replacement should find them.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// An app keeps one spare per this many of its instances on the cell (at
/// least one, at most `RepConfig::spare_containers`): instances that crash
/// together (a bad request reaching several) each find one.
pub(crate) const INSTANCES_PER_SPARE: usize = 3;

/// How many spares an app with `instances` on the cell keeps, at most
/// `most`.
pub fn wanted(most: usize, instances: usize) -> usize {
    most.min(instances.div_ceil(INSTANCES_PER_SPARE))
}

/// A spare taken for an instance: its instance guid (its container is
/// `lrps::container_handle` of it) and the definition it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spare {
    pub instance_guid: String,
    pub epoch: String,
}

/// The cell's spares, by process guid, and what paces making them.
pub(crate) struct Spares {
    most_per_app: usize,
    most_per_cell: usize,
    pools: Mutex<HashMap<String, Pool>>,
    /// Containers being created on the cell, and when the last one ended.
    creates: Mutex<Creates>,
    /// Bumped whenever `creates` changes, to wake [`Spares::quiet`].
    creates_changed: watch::Sender<u64>,
    /// Held while a spare is made: one at a time on the cell, whatever the
    /// app.
    turn: tokio::sync::Mutex<()>,
    /// Ends the making of spares (the cell stops).
    stop: CancellationToken,
}

#[derive(Debug)]
struct Pool {
    epoch: String,
    /// Instance guids of started, empty containers.
    ready: Vec<String>,
    /// Whether a task is making spares for it.
    filling: bool,
}

#[derive(Debug, Default)]
struct Creates {
    in_flight: usize,
    last_ended: Option<Instant>,
}

/// Held while a container is being created; see [`Spares::creating`].
pub(crate) struct Creating<'a>(&'a Spares);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        let mut creates = lock(&self.0.creates);
        creates.in_flight -= 1;
        creates.last_ended = Some(clock::now());
        drop(creates);
        self.0
            .creates_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Spares {
    pub fn new(most_per_app: usize, most_per_cell: usize) -> Spares {
        Spares {
            most_per_app,
            most_per_cell,
            pools: Mutex::new(HashMap::new()),
            creates: Mutex::new(Creates::default()),
            creates_changed: watch::Sender::new(0),
            turn: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
        }
    }

    /// How many spares `process_guid`'s app wants on the cell now.
    fn wanted(&self, rep: &Rep, process_guid: &str) -> usize {
        wanted(self.most_per_app, rep.instances_of(process_guid))
    }

    /// Whether the cell holds [`Spares::most_per_cell`] spares already.
    fn cell_is_full(&self) -> bool {
        let held: usize = lock(&self.pools)
            .values()
            .map(|pool| pool.ready.len())
            .sum();
        held >= self.most_per_cell
    }

    /// A spare of `process_guid`'s app, taken out of the pool.
    pub fn take(&self, process_guid: &str) -> Option<Spare> {
        let mut pools = lock(&self.pools);
        let pool = pools.get_mut(process_guid)?;
        let instance_guid = pool.ready.pop()?;
        Some(Spare {
            instance_guid,
            epoch: pool.epoch.clone(),
        })
    }

    /// Returns a spare whose instance could not be claimed; gives it back
    /// when its pool is gone or now for another definition of the app: the
    /// caller destroys it.
    #[must_use]
    pub fn put_back(&self, process_guid: &str, spare: Spare) -> Option<Spare> {
        let mut pools = lock(&self.pools);
        match pools.get_mut(process_guid) {
            Some(pool) if pool.epoch == spare.epoch => {
                pool.ready.push(spare.instance_guid);
                None
            }
            _ => Some(spare),
        }
    }

    #[cfg(test)]
    fn ready(&self, process_guid: &str) -> usize {
        lock(&self.pools)
            .get(process_guid)
            .map_or(0, |pool| pool.ready.len())
    }

    /// Marks a container being created until the guard drops.
    pub fn creating(&self) -> Creating<'_> {
        lock(&self.creates).in_flight += 1;
        self.creates_changed.send_modify(|n| *n = n.wrapping_add(1));
        Creating(self)
    }

    /// Resolves once no container has been created on the cell for
    /// [`QUIET`].
    async fn quiet(&self) {
        let mut changed = self.creates_changed.subscribe();
        loop {
            changed.borrow_and_update();
            let until = {
                let creates = lock(&self.creates);
                if creates.in_flight > 0 {
                    None
                } else {
                    match creates.last_ended {
                        Some(ended) if clock::now() < ended + QUIET => Some(ended + QUIET),
                        _ => return,
                    }
                }
            };
            match until {
                Some(until) => tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = changed.changed() => {}
                },
                None => {
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Ends the making of spares; [`Spares::destroy_all`] removes those
    /// made.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Destroys every spare of the cell.
    pub async fn destroy_all(&self, rep: &Rep) {
        let ready: Vec<String> = lock(&self.pools)
            .drain()
            .flat_map(|(_, pool)| pool.ready)
            .collect();
        destroy(rep, ready).await;
    }
}

/// An instance of `desired`'s app runs on the cell: makes the spares the
/// app wants, in the background.
pub(crate) fn replenish(rep: &Arc<Rep>, desired: &DesiredLrp) {
    let spares = &rep.spares;
    if spares.most_per_app == 0 || spares.stop.is_cancelled() {
        return;
    }
    let epoch = desired.modification_tag.epoch.clone();
    let wanted = spares.wanted(rep, &desired.process_guid);
    let (stale, start) = {
        let mut pools = lock(&spares.pools);
        let pool = pools
            .entry(desired.process_guid.clone())
            .or_insert_with(|| Pool {
                epoch: epoch.clone(),
                ready: Vec::new(),
                filling: false,
            });
        let stale = if pool.epoch == epoch {
            Vec::new()
        } else {
            // A task filling for the old definition stops at its next
            // check and leaves `filling` alone.
            pool.epoch = epoch;
            pool.filling = false;
            std::mem::take(&mut pool.ready)
        };
        let start = !pool.filling && pool.ready.len() < wanted;
        pool.filling |= start;
        (stale, start)
    };
    if stale.is_empty() && !start {
        return;
    }
    let rep = rep.clone();
    let desired = desired.clone();
    rep.clone().tracker.spawn(async move {
        destroy(&rep, stale).await;
        if start {
            fill(&rep, &desired).await;
        }
    });
}

/// Makes spares for `desired` while the pool it marked `filling` is short
/// of them and the cell runs the app; then clears `filling`.
async fn fill(rep: &Arc<Rep>, desired: &DesiredLrp) {
    let spares = &rep.spares;
    let process_guid = desired.process_guid.as_str();
    let epoch = desired.modification_tag.epoch.as_str();
    let is_short = || {
        let wanted = spares.wanted(rep, process_guid);
        lock(&spares.pools)
            .get(process_guid)
            .is_some_and(|pool| pool.filling && pool.epoch == epoch && pool.ready.len() < wanted)
    };
    loop {
        let _turn = tokio::select! {
            _ = spares.stop.cancelled() => break,
            turn = async {
                let turn = spares.turn.lock().await;
                spares.quiet().await;
                turn
            } => turn,
        };
        if rep.is_evacuating() || !is_short() {
            break;
        }
        if spares.cell_is_full() {
            tracing::debug!(
                process_guid,
                most = spares.most_per_cell,
                "the cell holds its most spare containers; none for this app"
            );
            break;
        }
        let instance_guid = uuid::Uuid::new_v4().to_string();
        let request = lrps::spare_request(rep, desired, &instance_guid);
        let began = clock::now();
        let created = {
            let _creating = spares.creating();
            rep.executor.create_container(request).await
        };
        match created {
            Ok(_) => {
                let kept = {
                    let mut pools = lock(&spares.pools);
                    match pools.get_mut(process_guid) {
                        Some(pool) if pool.epoch == epoch && !spares.stop.is_cancelled() => {
                            pool.ready.push(instance_guid.clone());
                            true
                        }
                        _ => false,
                    }
                };
                if kept {
                    tracing::debug!(process_guid, %instance_guid, took = ?began.elapsed(), "spare container ready");
                } else {
                    destroy(rep, vec![instance_guid]).await;
                }
            }
            Err(err) => {
                tracing::warn!(process_guid, error = %err, "cannot make a spare container");
                break;
            }
        }
    }
    if let Some(pool) = lock(&spares.pools).get_mut(process_guid) {
        if pool.epoch == epoch {
            pool.filling = false;
        }
    }
    // Instances of the app may have ended while its spare was made.
    trim(rep, process_guid).await;
}

/// An instance of `process_guid`'s app ended on the cell: [`LINGER`]
/// later, the spares it no longer wants go.
pub(crate) async fn instance_ended(rep: &Arc<Rep>, process_guid: &str) {
    if rep.spares.most_per_app == 0 {
        return;
    }
    tokio::select! {
        _ = rep.spares.stop.cancelled() => return,
        _ = tokio::time::sleep(LINGER) => {}
    }
    trim(rep, process_guid).await;
}

/// Destroys the spares of an app beyond those it wants now (all of them
/// when the cell runs none of its instances), unless a task is still
/// making one (it trims when done).
async fn trim(rep: &Rep, process_guid: &str) {
    let wanted = rep.spares.wanted(rep, process_guid);
    let ready = {
        let mut pools = lock(&rep.spares.pools);
        match pools.get_mut(process_guid) {
            Some(pool) if !pool.filling && wanted == 0 => {
                pools.remove(process_guid).map(|pool| pool.ready)
            }
            Some(pool) if !pool.filling && pool.ready.len() > wanted => {
                Some(pool.ready.split_off(wanted))
            }
            _ => None,
        }
    };
    if let Some(ready) = ready {
        tracing::debug!(
            process_guid,
            spares = ready.len(),
            "the app wants fewer spares on the cell; destroying some"
        );
        destroy(rep, ready).await;
    }
}

async fn destroy(rep: &Rep, instance_guids: Vec<String>) {
    let destroys = instance_guids
        .iter()
        .map(|instance_guid| discard(rep, instance_guid));
    futures::future::join_all(destroys).await;
}

/// The spare an instance claimed under `instance_guid`, if it can still
/// run it: started, nothing run in it yet, and made from the build of the
/// app's image the engine has now (both asked at once). Otherwise it is
/// destroyed (with the app's other spares when the image was rebuilt) and
/// `None` says to make a container as usual, under the same name.
pub(crate) async fn claim(
    rep: &Arc<Rep>,
    desired: &DesiredLrp,
    instance_guid: &str,
) -> Option<ContainerInfo> {
    let handle = lrps::container_handle(instance_guid);
    let (info, image) = tokio::join!(
        rep.executor.info(&handle),
        rep.executor.garden().image_id(&desired.rootfs)
    );
    match (info, image) {
        (Ok(info), Ok(Some(image)))
            if info.running && info.processes.is_empty() && info.image == image =>
        {
            return Some(info);
        }
        (Ok(info), Ok(Some(image))) if info.image != image => {
            tracing::debug!(process_guid = %desired.process_guid, "the app's image was rebuilt since its spares were made; they go");
            drop_pool(rep, &desired.process_guid);
        }
        // Stopped or killed meanwhile, or the engine could not say.
        _ => {}
    }
    discard(rep, instance_guid).await;
    None
}

/// Destroys every ready spare of `process_guid`'s app, in the background:
/// one was found made from an image since rebuilt under the same name, and
/// the others most likely were too; the app's next instances would each
/// find theirs stale. The instance's own start replenishes the pool with
/// the new build.
fn drop_pool(rep: &Arc<Rep>, process_guid: &str) {
    let ready = lock(&rep.spares.pools)
        .get_mut(process_guid)
        .map(|pool| std::mem::take(&mut pool.ready))
        .unwrap_or_default();
    if ready.is_empty() {
        return;
    }
    let rep = rep.clone();
    rep.clone()
        .tracker
        .spawn(async move { destroy(&rep, ready).await });
}

/// Destroys the spare made under `instance_guid`: stale, dead, or not
/// kept.
pub(crate) async fn discard(rep: &Rep, instance_guid: &str) {
    let handle = lrps::container_handle(instance_guid);
    if let Err(err) = rep.executor.destroy(&handle).await {
        tracing::warn!(%handle, error = %err, "cannot destroy a spare container");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use lattice_executor::fake::Script;
    use lattice_garden::Garden;
    use lattice_models::auction::{LrpInstance, Resource, Work};
    use lattice_models::{ActualLrp, ActualLrpState, Event};
    use tokio_util::sync::CancellationToken;

    use super::QUIET;
    use crate::fake::{TestRep, SMALL_CELL, UNSERVED_ADDRESS};
    use crate::{RepConfig, INDEX_PROPERTY, INSTANCE_GUID_PROPERTY};

    const PATIENCE: Duration = Duration::from_secs(20);

    #[test]
    fn an_app_wants_a_spare_per_three_instances_on_the_cell_within_the_most() {
        for (most, instances, wanted) in [
            (3, 0, 0),
            (3, 1, 1),
            (3, 3, 1),
            (3, 4, 2),
            (3, 7, 3),
            (3, 10, 3),
            (1, 10, 1),
            (0, 10, 0),
            (5, 15, 5),
        ] {
            assert_eq!(
                super::wanted(most, instances),
                wanted,
                "most {most}, {instances} instances"
            );
        }
    }

    fn work(index: i64) -> Work {
        work_of("web", index)
    }

    fn work_of(process_guid: &str, index: i64) -> Work {
        Work {
            lrps: vec![LrpInstance {
                process_guid: process_guid.into(),
                index,
                domain: "apps".into(),
                resource: Resource::for_container(128, 64),
                rootfs: "docker:///busybox".into(),
            }],
            tasks: Vec::new(),
        }
    }

    async fn running(events: &mut lattice_bbs::EventReceiver, index: i64) -> ActualLrp {
        running_of(events, "web", index).await
    }

    async fn running_of(
        events: &mut lattice_bbs::EventReceiver,
        process_guid: &str,
        index: i64,
    ) -> ActualLrp {
        let change = async {
            loop {
                if let Ok(Event::ActualLrpChanged {
                    actual_lrp_after, ..
                }) = events.recv().await
                {
                    if actual_lrp_after.process_guid == process_guid
                        && actual_lrp_after.index == index
                        && actual_lrp_after.state == ActualLrpState::Running
                    {
                        return actual_lrp_after;
                    }
                }
            }
        };
        tokio::time::timeout(PATIENCE, change)
            .await
            .expect("the instance runs")
    }

    /// A running rep on the fake Garden, following the store's events.
    struct RunningCell {
        cell: TestRep,
        events: lattice_bbs::EventReceiver,
        shutdown: CancellationToken,
        serving: tokio::task::JoinHandle<()>,
    }

    /// Starts a cell keeping `spares` per app (`per_cell` in all) with
    /// `apps` desired (process guid, instances), every instance unclaimed.
    async fn running_cell(spares: usize, per_cell: usize, apps: &[(&str, i64)]) -> RunningCell {
        let config = RepConfig {
            spare_containers: spares,
            spare_containers_per_cell: per_cell,
            ..RepConfig::new("cell-spares", SMALL_CELL, UNSERVED_ADDRESS)
        };
        let cell = TestRep::new(config).await;
        let (rep, garden, store) = (cell.rep(), cell.garden(), &cell.store);
        garden.script("/bin/httpd", Script::runs_for(Duration::from_secs(3600)));
        for &(app, instances) in apps {
            store
                .create_desired_lrp(lattice_bbs::suite::desired_lrp(app, "apps", instances))
                .await
                .expect("desired");
            for index in 0..instances {
                store
                    .create_actual_lrp(lattice_bbs::suite::actual_lrp(app, "apps", index))
                    .await
                    .expect("actual");
            }
        }
        let events = store.subscribe();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(rep.clone().run(shutdown.clone()));
        while !garden.has_event_subscribers() {
            tokio::task::yield_now().await;
        }
        RunningCell {
            cell,
            events,
            shutdown,
            serving,
        }
    }

    /// A running cell with an app of two instances: instance 0 runs and the
    /// app's one spare is ready.
    struct SpareReady {
        cell: TestRep,
        events: lattice_bbs::EventReceiver,
        shutdown: CancellationToken,
        serving: tokio::task::JoinHandle<()>,
        spare: lattice_garden::ContainerSpec,
    }

    async fn spare_ready() -> SpareReady {
        let RunningCell {
            cell,
            mut events,
            shutdown,
            serving,
        } = running_cell(1, usize::MAX, &[("web", 2)]).await;
        let (rep, garden) = (cell.rep(), cell.garden());
        assert!(rep.perform(work(0)).is_empty());
        running(&mut events, 0).await;

        let spare = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(spec) = garden.created().get(1) {
                    break spec.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a spare is made");
        assert!(!spare.properties.contains_key(INDEX_PROPERTY));
        // Ready once the pool has it (made and pushed just after).
        while rep.spares.ready("web") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        SpareReady {
            cell,
            events,
            shutdown,
            serving,
            spare,
        }
    }

    /// Stops the rep and checks that no container of it is left.
    async fn stops_leaving_nothing(
        shutdown: CancellationToken,
        serving: tokio::task::JoinHandle<()>,
        garden: &lattice_executor::fake::FakeGarden,
    ) {
        shutdown.cancel();
        serving.await.expect("the rep stops");
        let left = garden.list(&BTreeMap::new()).await.expect("list");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    async fn created_count(garden: &lattice_executor::fake::FakeGarden, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            while garden.created().len() < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} containers made: {:?}", garden.created()));
    }

    /// Issue 16, goal 2: the cell makes a spare once it is quiet; the next
    /// instance of the app runs in it without a create of its own, and
    /// another spare is made; the instance's usage and the engine's report
    /// that its container died still find it (a spare's labels have no
    /// index), an untaken spare has no usage; the spares go with the cell.
    #[tokio::test]
    async fn the_next_instance_runs_in_the_spare_made_once_the_cell_was_quiet() {
        let SpareReady {
            cell,
            mut events,
            shutdown,
            serving,
            spare,
        } = spare_ready().await;
        let (rep, garden) = (cell.rep(), cell.garden());

        assert!(rep.perform(work(1)).is_empty());
        let second = running(&mut events, 1).await;
        assert_eq!(
            Some(&second.instance_guid),
            spare.properties.get(INSTANCE_GUID_PROPERTY),
            "instance 1 runs in the spare"
        );
        assert_eq!(garden.created().len(), 2, "no container made for it");

        // The cell makes another spare; usage is sampled for instances only.
        created_count(garden, 3).await;
        rep.sample_usage_once().await.expect("sampled");
        let sampled: Vec<(i64, String)> = rep
            .container_metrics()
            .into_iter()
            .map(|m| (m.index, m.instance_guid))
            .collect();
        assert!(
            sampled.contains(&(1, second.instance_guid.clone())),
            "instance 1's usage has its index: {sampled:?}"
        );
        assert_eq!(sampled.len(), 2, "only instances are sampled: {sampled:?}");

        garden.exited(&spare.handle, Some(137));
        let crashed = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Ok(Event::ActualLrpChanged {
                    actual_lrp_after, ..
                }) = events.recv().await
                {
                    if actual_lrp_after.index == 1
                        && actual_lrp_after.state == ActualLrpState::Crashed
                    {
                        return actual_lrp_after;
                    }
                }
            }
        })
        .await
        .expect("instance 1 crashes when its container dies");
        assert_eq!(crashed.instance_guid, second.instance_guid);

        stops_leaving_nothing(shutdown, serving, garden).await;
    }

    /// An image rebuilt under the same name (`docker build -t` again)
    /// reaches the next instance: a spare made from the old build is not
    /// taken, the instance gets a fresh container, and the next spare is
    /// made from the new build.
    #[tokio::test]
    async fn a_spare_made_from_an_image_since_rebuilt_is_not_taken() {
        let SpareReady {
            cell,
            mut events,
            shutdown,
            serving,
            spare,
        } = spare_ready().await;
        let (rep, garden) = (cell.rep(), cell.garden());
        garden.rebuild_image(&spare.rootfs);
        let rebuilt = garden.image_id(&spare.rootfs).await.expect("image id");

        assert!(rep.perform(work(1)).is_empty());
        let second = running(&mut events, 1).await;
        let made = garden.created();
        let own = made.get(2).expect("a container of its own");
        assert_eq!(own.handle, spare.handle, "under the claimed instance guid");
        assert_eq!(
            own.properties.get(INDEX_PROPERTY).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            Some(&second.instance_guid),
            own.properties.get(INSTANCE_GUID_PROPERTY)
        );
        let info = garden.info(&own.handle).await.expect("info");
        assert_eq!(Some(info.image), rebuilt, "the instance runs the new build");

        created_count(garden, 4).await;
        let next_spare = &garden.created()[3];
        assert!(!next_spare.properties.contains_key(INDEX_PROPERTY));
        let info = garden.info(&next_spare.handle).await.expect("info");
        assert_eq!(
            Some(info.image),
            rebuilt,
            "the next spare has the new build"
        );

        stops_leaving_nothing(shutdown, serving, garden).await;
    }

    /// With room for one spare on the cell, an app placed after the cell
    /// made one for another gets none.
    #[tokio::test]
    async fn an_app_placed_once_the_cell_holds_its_most_spares_goes_without() {
        let RunningCell {
            cell,
            mut events,
            shutdown,
            serving,
        } = running_cell(1, 1, &[("web", 1), ("api", 1)]).await;
        let (rep, garden) = (cell.rep(), cell.garden());
        assert!(rep.perform(work_of("web", 0)).is_empty());
        running_of(&mut events, "web", 0).await;
        created_count(garden, 2).await;
        while rep.spares.ready("web") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        assert!(rep.perform(work_of("api", 0)).is_empty());
        running_of(&mut events, "api", 0).await;
        // A spare would come once the cell was quiet for QUIET.
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(garden.created().len(), 3, "{:?}", garden.created());
        assert_eq!(rep.spares.ready("api"), 0);
        assert_eq!(rep.spares.ready("web"), 1);

        stops_leaving_nothing(shutdown, serving, garden).await;
    }

    /// Once an instance finds its spare made from an image since rebuilt,
    /// the app's other spares (of the old build too) go at once and the
    /// pool is made again from the new build.
    #[tokio::test]
    async fn a_rebuilt_image_renews_all_the_apps_spares() {
        let RunningCell {
            cell,
            mut events,
            shutdown,
            serving,
        } = running_cell(3, usize::MAX, &[("web", 5)]).await;
        let (rep, garden) = (cell.rep(), cell.garden());
        // Four instances on the cell want two spares.
        for index in 0..4 {
            assert!(rep.perform(work(index)).is_empty());
            running(&mut events, index).await;
        }
        let spares = |garden: &lattice_executor::fake::FakeGarden| {
            let garden = garden.clone();
            async move {
                let all = garden.list(&BTreeMap::new()).await.expect("list");
                all.into_iter()
                    .filter(|c| !c.properties.contains_key(INDEX_PROPERTY))
                    .collect::<Vec<_>>()
            }
        };
        tokio::time::timeout(PATIENCE, async {
            while rep.spares.ready("web") < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("two spares are made");
        let old: Vec<String> = spares(garden).await.into_iter().map(|c| c.handle).collect();
        assert_eq!(old.len(), 2, "{old:?}");

        let rootfs = &garden.created()[0].rootfs;
        garden.rebuild_image(rootfs);
        let rebuilt = garden.image_id(rootfs).await.expect("image id");
        assert!(rep.perform(work(4)).is_empty());
        running(&mut events, 4).await;

        let renewed = tokio::time::timeout(PATIENCE, async {
            loop {
                let now = spares(garden).await;
                if now.len() == 2
                    && rep.spares.ready("web") == 2
                    && now.iter().all(|c| Some(&c.image) == rebuilt.as_ref())
                {
                    break now;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("two spares of the new build, and no other");
        assert!(
            renewed.iter().all(|c| !old.contains(&c.handle)),
            "an old spare is left: {renewed:?} (old {old:?})"
        );

        stops_leaving_nothing(shutdown, serving, garden).await;
    }
}
