//! Task completion callbacks: a completed task with a
//! `completion_callback_url` is POSTed there as JSON, then deleted.
//!
//! ```text
//! COMPLETED --CAS resolve--> RESOLVING --POST 2xx--> (deleted)
//!     ^                          |
//!     +-----CAS unresolve--------+  (no 2xx after every attempt, or shutdown)
//! ```
//! Taking the task to RESOLVING with compare-and-swap first means that two
//! resolvers (two brains, or the change feed and a periodic pass) never POST
//! the same completion at once. A resolver that dies mid-callback leaves the
//! task RESOLVING; the converger takes it back after
//! [`Policy::resolving_timeout`].
//!
//! # Guarantees
//! - A callback is delivered at least once while the task lives (until
//!   [`Policy::completed_ttl`]); it may be delivered twice if the resolver
//!   dies between the POST and the delete.
//! - A task is never deleted before its callback answered 2xx, except by
//!   expiry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lattice_bbs::{SharedStore, StoreError};
use lattice_models::{Task, TaskEvent, TaskState};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::decide::{self, Policy};

/// How callbacks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// Limit of one POST, connection included.
    pub timeout: Duration,
    /// POSTs per resolution before the task is handed back for a later pass.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each.
    pub backoff: Duration,
    /// Callbacks in flight at once, so that a burst of completions does not
    /// open thousands of connections.
    pub concurrency: usize,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(500),
            concurrency: 16,
        }
    }
}

/// How one resolution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The callback answered 2xx; the task is deleted.
    Delivered,
    /// The callback did not answer 2xx (or the resolver shut down): the task
    /// is COMPLETED again and a later pass retries.
    HandedBack,
    /// Nothing to do: the task is gone, not due, already being resolved, or
    /// another writer changed it first.
    Skipped,
    /// The store failed; the task stays as it is and a later pass decides.
    Failed,
}

/// Resolutions of one pass, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackCounts {
    pub delivered: usize,
    pub handed_back: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl CallbackCounts {
    pub fn add(&mut self, resolution: Resolution) {
        match resolution {
            Resolution::Delivered => self.delivered += 1,
            Resolution::HandedBack => self.handed_back += 1,
            Resolution::Skipped => self.skipped += 1,
            Resolution::Failed => self.failed += 1,
        }
    }
}

/// Resolves completed tasks. Cheap to clone; clones share the in-flight set
/// and the concurrency limit.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    http: reqwest::Client,
    config: CallbackConfig,
    policy: Policy,
    /// Task guids being resolved by this process, so one task is never
    /// resolved twice at once here. A std mutex: held for set updates only,
    /// never across an `.await`.
    in_flight: Mutex<HashSet<String>>,
    permits: Semaphore,
}

enum Delivery {
    Delivered(StatusCode),
    Undelivered(String),
    Cancelled,
}

impl Resolver {
    /// # Errors
    /// The HTTP client cannot be built (the system's resolver or TLS setup
    /// is unusable).
    pub fn new(
        store: SharedStore,
        config: CallbackConfig,
        policy: Policy,
    ) -> Result<Resolver, reqwest::Error> {
        let http = reqwest::Client::builder().build()?;
        let permits = Semaphore::new(config.concurrency.max(1));
        Ok(Resolver {
            inner: Arc::new(Inner {
                store,
                http,
                config,
                policy,
                in_flight: Mutex::new(HashSet::new()),
                permits,
            }),
        })
    }

    /// Resolves `task_guid` if it is due (see [`decide::should_resolve`]).
    /// `cancel` stops the delivery; the task is then handed back.
    ///
    /// # Assumptions
    /// Cancelling the returned future itself (rather than `cancel`) may leave
    /// the task RESOLVING until [`Policy::resolving_timeout`].
    pub async fn resolve(&self, task_guid: &str, cancel: &CancellationToken) -> Resolution {
        let Some(_in_flight) = InFlight::enter(&self.inner.in_flight, task_guid) else {
            return Resolution::Skipped;
        };
        let _permit = tokio::select! {
            _ = cancel.cancelled() => return Resolution::Skipped,
            permit = self.inner.permits.acquire() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; were it, there is nothing to do.
                Err(_) => return Resolution::Skipped,
            },
        };
        let store = &self.inner.store;
        let task = match store.get_task(task_guid).await {
            Ok(task) => task,
            Err(StoreError::NotFound { .. }) => return Resolution::Skipped,
            Err(err) => {
                tracing::warn!(task_guid, error = %err, "cannot read task to resolve");
                return Resolution::Failed;
            }
        };
        if !decide::should_resolve(&task, now(), &self.inner.policy) {
            return Resolution::Skipped;
        }
        let Some(resolving) = self.take(task).await else {
            return Resolution::Skipped;
        };
        match self.deliver(&resolving, cancel).await {
            Delivery::Delivered(status) => self.finish(resolving, status).await,
            Delivery::Undelivered(why) => {
                tracing::warn!(task_guid, url = %resolving.completion_callback_url, reason = %why, "completion callback failed; will retry");
                self.hand_back(resolving).await
            }
            Delivery::Cancelled => self.hand_back(resolving).await,
        }
    }

    /// COMPLETED (or RESOLVING by a dead resolver) -> RESOLVING by us, with
    /// compare-and-swap; `None` if someone else wrote the task first.
    async fn take(&self, task: Task) -> Option<Task> {
        let task_guid = task.task_guid.clone();
        let mut next = task;
        let now = now();
        if next.state == TaskState::Resolving {
            // Retaking from a resolver that looks dead: one write, so that
            // nobody sees the task COMPLETED in between.
            next.apply(TaskEvent::Unresolve, now).ok()?;
        }
        next.apply(TaskEvent::Resolve, now).ok()?;
        match self.inner.store.update_task(next).await {
            Ok(resolving) => Some(resolving),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => None,
            Err(err) => {
                tracing::warn!(task_guid, error = %err, "cannot mark task resolving");
                None
            }
        }
    }

    /// POSTs the task, retrying transport errors and retryable statuses.
    async fn deliver(&self, task: &Task, cancel: &CancellationToken) -> Delivery {
        let config = &self.inner.config;
        let mut last = String::from("no attempt made");
        for attempt in 1..=config.attempts.max(1) {
            if attempt > 1 {
                let exponent = (attempt - 2).min(16);
                let wait = config.backoff.saturating_mul(1 << exponent);
                tokio::select! {
                    _ = cancel.cancelled() => return Delivery::Cancelled,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let send = self
                .inner
                .http
                .post(&task.completion_callback_url)
                .timeout(config.timeout)
                .json(task)
                .send();
            let response = tokio::select! {
                _ = cancel.cancelled() => return Delivery::Cancelled,
                response = send => response,
            };
            match response {
                Ok(response) if response.status().is_success() => {
                    return Delivery::Delivered(response.status())
                }
                Ok(response) => {
                    let status = response.status();
                    last = format!("answered {status}");
                    if !is_retryable(status) {
                        break;
                    }
                }
                Err(err) => last = format!("request failed: {err}"),
            }
            tracing::debug!(task_guid = %task.task_guid, attempt, reason = %last, "completion callback attempt failed");
        }
        Delivery::Undelivered(last)
    }

    async fn finish(&self, resolving: Task, status: StatusCode) -> Resolution {
        let task_guid = resolving.task_guid.as_str();
        match self
            .inner
            .store
            .delete_task(task_guid, &resolving.modification_tag)
            .await
        {
            Ok(()) => {
                tracing::info!(task_guid, %status, "completion callback delivered; task deleted");
                Resolution::Delivered
            }
            // Expired, or retaken by another resolver that thought us dead:
            // the callback went through either way.
            Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {
                tracing::info!(task_guid, %status, "completion callback delivered; task changed meanwhile");
                Resolution::Delivered
            }
            Err(err) => {
                tracing::warn!(task_guid, error = %err, "completion callback delivered but task not deleted; it may be delivered again");
                Resolution::Failed
            }
        }
    }

    /// RESOLVING -> COMPLETED, so a later pass tries again.
    async fn hand_back(&self, resolving: Task) -> Resolution {
        let task_guid = resolving.task_guid.clone();
        let mut next = resolving;
        if next.apply(TaskEvent::Unresolve, now()).is_err() {
            return Resolution::Skipped;
        }
        match self.inner.store.update_task(next).await {
            Ok(_) => Resolution::HandedBack,
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Resolution::Skipped,
            Err(err) => {
                tracing::warn!(%task_guid, error = %err, "cannot hand back task; it is retried after the resolving timeout");
                Resolution::Failed
            }
        }
    }
}

/// Statuses worth another attempt right away; other failures wait for a
/// later pass.
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

fn now() -> i64 {
    lattice_models::unix_nanos(SystemTime::now())
}

/// Membership of a task guid in the in-flight set, removed on drop.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    task_guid: String,
}

impl<'a> InFlight<'a> {
    fn enter(set: &'a Mutex<HashSet<String>>, task_guid: &str) -> Option<InFlight<'a>> {
        // A poisoned set only means another resolution panicked mid-insert;
        // the set itself is still a valid set.
        let mut guids = set.lock().unwrap_or_else(|e| e.into_inner());
        guids.insert(task_guid.to_string()).then(|| InFlight {
            set,
            task_guid: task_guid.to_string(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut guids = self.set.lock().unwrap_or_else(|e| e.into_inner());
        guids.remove(&self.task_guid);
    }
}
