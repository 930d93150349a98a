//! `ltc test`: a smoke test of the cluster, as Lattice's `ltc test` was. It
//! does what a user would, one step after another, and reports each with
//! its time (`✓ create app (2.1 s)`, or `✗` and the reason):
//!
//! 1. reach the receptor (`GET /v1/info`: the domain and the router);
//! 2. create the sample app `lattice/lattice-app` as `lattice-test-XXXXXX`,
//!    through `ltc create`'s own code, staging included;
//! 3. reach it through the router (`GET /` with `Host: APP.DOMAIN`);
//! 4. scale it to 3 instances, through `ltc scale`'s code;
//! 5. reach each of the 3 instances through the router (`GET /index`);
//! 6. read its log lines from the log hub: a CELL line, and an APP line of a
//!    `/index` request from each instance;
//! 7. remove it, and see it gone: not desired, no instance left, and the
//!    router answers 404 for its host.
//!
//! The first step that fails ends the test: every later one needs it.
//!
//! # Guarantees
//! Whatever happens (a step fails, Ctrl-C), ltc then removes the app and
//! cancels and deletes its staging tasks, for at most [`CLEANUP_TIMEOUT`],
//! and says what it removed; a cleanup that fails is reported, not hidden.
//!
//! # Errors
//! Exit code 1 when a step fails or the test is interrupted, also when the
//! app did not start in time: what failed is the test, and its report says
//! why (`ltc create` would exit with 3 there).
//!
//! # Caveats
//! A second Ctrl-C does not cut the cleanup short (ltc handles the signal
//! by then); the cleanup's own time limit bounds it.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Parser as _;
use lattice_client::LogsClient;
use lattice_client::{Client, Info};
use lattice_models::log::LogFilter;
use lattice_models::log::{LogMessage, SOURCE_APP, SOURCE_CELL};
use lattice_models::TaskState;
use tokio::time::Instant;

use crate::commands::{create, remove, scale};
use crate::log_stream::LineFormat;
use crate::output::Stderr;
use crate::progress::Spinner;
use crate::routes::default_hostname;
use crate::wait::POLL_INTERVAL;
use crate::Context;

/// The image the test runs: the sample app every cell builds locally, so
/// that the test needs no registry.
pub const SAMPLE_IMAGE: &str = "lattice/lattice-app";
/// The test app's name before its random part.
pub const APP_PREFIX: &str = "lattice-test-";
/// How many instances the app is scaled to: enough to see the router
/// balance, few enough for any cell.
pub const SCALED_INSTANCES: i64 = 3;
/// How long the cleanup may take in all.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request to the router may take: the sample app answers at
/// once, so a longer wait means the router or the app is stuck.
const ROUTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two requests to the router while looking for every
/// instance: short, so the round-robin is seen quickly, but each request
/// puts two lines (APP, RTR) into the app's bounded log buffer.
const ROUTER_PAUSE: Duration = Duration::from_millis(100);
/// Added to a step's own waits for its backstop: the requests in flight when
/// a wait ends have their own limits (the receptor client's is 30 s).
const BACKSTOP_SLACK: Duration = Duration::from_secs(60);

pub const EXAMPLES: &str = "\
Examples:
  # Test the cluster ltc targets
  ltc test
  # Allow slow cells more time, and show the app's log lines
  ltc test --timeout 5m --verbose";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long each wait of a step may take: staging and starting the app
    /// (as `ltc create --timeout`), scaling it, the router reaching it, its
    /// log lines arriving, it being gone.
    #[arg(long, default_value = "2m", value_parser = crate::output::parse_rate)]
    pub timeout: Duration,

    /// Show what the steps do: what create and scale print and the app's
    /// log lines meanwhile, the router's answers, and the app's recent log
    /// lines.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Runs the test until it ends or `stop` completes (Ctrl-C for ltc), and
/// cleans up either way.
pub async fn run(
    args: &Args,
    ctx: &Context,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = format!(
        "{APP_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let probe = Probe::new(args, ctx, &app)?;
    writeln!(
        out,
        "Testing the cluster at {} with app {app} ({} per wait)",
        ctx.target.url,
        humantime::format_duration(args.timeout)
    )?;
    let spinner = (!args.verbose).then(|| ctx.stderr.clone());
    let mut report = Report::new(out, spinner);
    let finished = {
        let steps = probe.steps(&mut report);
        tokio::select! {
            result = steps => Some(result),
            () = stop => None,
        }
    };
    if finished.is_none() {
        report.interrupted()?;
    }
    let passed = report.passed;
    let cleanup = tokio::time::timeout(CLEANUP_TIMEOUT, clean_up(&probe.client, &app))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "cannot clean up within {}",
                humantime::format_duration(CLEANUP_TIMEOUT)
            ))
        });
    match &cleanup {
        Ok(done) if done.is_empty() => {}
        Ok(done) => writeln!(out, "Cleaned up: {}", done.join(", "))?,
        Err(err) => {
            writeln!(out, "Cleanup failed; see what is left with `ltc list`:")?;
            write_indented(out, &format!("{err:#}"))?;
        }
    }
    match finished {
        None => bail!("the cluster test was interrupted"),
        Some(Err(err)) => Err(err),
        Some(Ok(())) => {
            writeln!(out, "All {passed} steps passed.")?;
            cleanup.map(drop)
        }
    }
}

/// A step that failed; the report said why already.
#[derive(Debug, thiserror::Error)]
#[error("the cluster test failed: {step}")]
pub struct StepFailed {
    pub step: String,
}

/// Runs steps and reports each on `out` as it ends: `✓ NAME (2.1 s)`, or
/// `✗ NAME (2.1 s)` and the reason's lines indented under it.
pub struct Report<'a> {
    out: &'a mut dyn Write,
    /// Where a spinner turns while a step runs; `None` with `--verbose`,
    /// where create and scale turn their own.
    spinner: Option<Stderr>,
    /// The step running now and since when, for an interruption.
    current: Option<(String, Instant)>,
    /// How many steps passed.
    pub passed: usize,
}

impl<'a> Report<'a> {
    pub fn new(out: &'a mut dyn Write, spinner: Option<Stderr>) -> Report<'a> {
        Report {
            out,
            spinner,
            current: None,
            passed: 0,
        }
    }

    /// Runs `work` as the step `name`. `backstop` ends it if it runs that
    /// long (a step is meant to end by itself, with a better reason).
    ///
    /// # Errors
    /// [`StepFailed`] when `work` fails or the backstop ends it; an I/O
    /// error if the report cannot be written.
    pub async fn step<T>(
        &mut self,
        name: &str,
        backstop: Duration,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        self.current = Some((name.to_string(), started));
        let spinner = self
            .spinner
            .as_ref()
            .map(|stderr| Spinner::new(stderr, format!("{name}...")));
        let result = match tokio::time::timeout(backstop, work).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!(
                "did not finish within {}",
                humantime::format_duration(backstop)
            )),
        };
        drop(spinner);
        self.current = None;
        let took = seconds(started.elapsed());
        match result {
            Ok(value) => {
                writeln!(self.out, "✓ {name} ({took})")?;
                self.passed += 1;
                Ok(value)
            }
            Err(err) => {
                writeln!(self.out, "✗ {name} ({took})")?;
                write_indented(self.out, &format!("{err:#}"))?;
                Err(StepFailed {
                    step: name.to_string(),
                }
                .into())
            }
        }
    }

    /// Reports the step that was running when the test was interrupted.
    pub fn interrupted(&mut self) -> std::io::Result<()> {
        match self.current.take() {
            Some((name, started)) => {
                writeln!(self.out, "✗ {name} ({})", seconds(started.elapsed()))?;
                write_indented(self.out, "interrupted")
            }
            None => writeln!(self.out, "✗ interrupted"),
        }
    }
}

/// `2.1 s`.
fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn write_indented(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    for line in text.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// What the steps need, built once.
struct Probe<'a> {
    args: &'a Args,
    app: &'a str,
    /// What create and scale run with: the user's context, with their
    /// stderr (spinner, log lines) silenced unless `--verbose`.
    inner: Context,
    /// Where `--verbose` details go (the user's stderr), else `None`.
    verbose: Option<Stderr>,
    client: Client,
    logs: LogsClient,
    http: reqwest::Client,
}

impl<'a> Probe<'a> {
    fn new(args: &'a Args, ctx: &Context, app: &'a str) -> anyhow::Result<Probe<'a>> {
        let mut inner = ctx.clone();
        if !args.verbose {
            inner.stderr = Stderr::new(std::io::sink(), false, false);
        }
        let http = reqwest::Client::builder()
            .timeout(ROUTER_REQUEST_TIMEOUT)
            // The router is asked directly, as the cluster's users would;
            // an HTTP_PROXY meant for the internet must not come between.
            .no_proxy()
            .build()
            .context("cannot set up an HTTP client")?;
        Ok(Probe {
            args,
            app,
            verbose: args.verbose.then(|| ctx.stderr.clone()),
            client: ctx.client()?,
            logs: ctx.logs_client()?,
            inner,
            http,
        })
    }

    async fn steps(&self, report: &mut Report<'_>) -> anyhow::Result<()> {
        let wait = self.args.timeout;
        let one_wait = wait + BACKSTOP_SLACK;
        let info = report
            .step("reach the receptor", one_wait, self.reach())
            .await?;
        // Staging, then the instances: two waits.
        report
            .step("create app", wait * 2 + BACKSTOP_SLACK, self.create())
            .await?;
        let router = report
            .step(
                "reach the app through the router",
                one_wait,
                self.reach_app(&info),
            )
            .await?;
        report
            .step(
                &format!("scale to {SCALED_INSTANCES} instances"),
                one_wait,
                self.scale(),
            )
            .await?;
        report
            .step(
                "reach every instance through the router",
                one_wait,
                self.reach_every_instance(&router),
            )
            .await?;
        report
            .step("read the app's logs", one_wait, self.read_logs())
            .await?;
        report
            .step("remove app", one_wait, self.remove(&router))
            .await?;
        Ok(())
    }

    async fn reach(&self) -> anyhow::Result<Info> {
        let info = self
            .client
            .info()
            .await
            .context("cannot read the cluster's info")?;
        self.say(&format!(
            "receptor {}, domain {}, router {}",
            info.version,
            info.domain,
            info.router_address.as_deref().unwrap_or("(none)")
        ));
        Ok(info)
    }

    async fn create(&self) -> anyhow::Result<()> {
        let timeout = humantime::format_duration(self.args.timeout).to_string();
        let argv = ["create", self.app, SAMPLE_IMAGE, "--timeout", &timeout];
        let args = CreateLine::try_parse_from(argv)
            .context("cannot build the create command line")?
            .args;
        let mut details = self.details();
        let created = create::run(&args, &self.inner, &|_| None, &mut details).await;
        details.flush()?;
        created
    }

    async fn reach_app(&self, info: &Info) -> anyhow::Result<RouterProbe> {
        let Some(address) = info.router_address.as_deref() else {
            bail!(
                "the cluster has no router: /v1/info says router_address is null \
                 (`lattice up` runs one unless told not to)"
            );
        };
        let router = RouterProbe::new(
            self.http.clone(),
            address,
            default_hostname(self.app, &info.domain),
        )?;
        let deadline = Instant::now() + self.args.timeout;
        loop {
            let last = match router.get("/").await {
                Ok(answer) if answer.status == 200 && answer.body.starts_with("lattice-app: ") => {
                    self.say(&format!("{}: {answer}", router.request("/")));
                    return Ok(router);
                }
                Ok(answer) => format!("it answered {answer}"),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} did not reach the app within {}; last: {last}",
                    router.request("/"),
                    humantime::format_duration(self.args.timeout)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn scale(&self) -> anyhow::Result<()> {
        let args = scale::Args {
            app: self.app.to_string(),
            instances: SCALED_INSTANCES,
            timeout: self.args.timeout,
        };
        let mut details = self.details();
        let scaled = scale::run(&args, &self.inner, &mut details).await;
        details.flush()?;
        scaled
    }

    async fn reach_every_instance(&self, router: &RouterProbe) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.args.timeout;
        let mut seen = BTreeSet::new();
        let mut requests = 0;
        loop {
            let answer = router.get("/index").await;
            requests += 1;
            let last = match answer {
                Ok(answer) => match answered_index(&answer) {
                    Some(index) => {
                        seen.insert(index);
                        None
                    }
                    None => Some(format!("it answered {answer}")),
                },
                Err(err) => Some(format!("{err:#}")),
            };
            if seen.len() == usize::try_from(SCALED_INSTANCES)? {
                self.say(&format!(
                    "{} reached instances {} in {requests} requests",
                    router.request("/index"),
                    list(&seen)
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut message = format!(
                    "{} reached only instances [{}] of {SCALED_INSTANCES} in \
                     {requests} requests within {}",
                    router.request("/index"),
                    list(&seen),
                    humantime::format_duration(self.args.timeout)
                );
                if let Some(last) = last {
                    message.push_str(&format!("; last: {last}"));
                }
                bail!(message);
            }
            tokio::time::sleep(ROUTER_PAUSE).await;
        }
    }

    async fn read_logs(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.args.timeout;
        loop {
            let last = match self.logs.recent(self.app, &LogFilter::default()).await {
                Ok(lines) => {
                    let missing = missing_lines(&lines, SCALED_INSTANCES);
                    if missing.is_empty() {
                        if let Some(stderr) = &self.verbose {
                            let format = LineFormat::new(stderr.color);
                            for line in &lines {
                                stderr.line(&format!("  {}", format.render(line)));
                            }
                        }
                        return Ok(());
                    }
                    format!("{} lines, but no {}", lines.len(), missing.join(", no "))
                }
                Err(err) => format!("{:#}", anyhow::Error::from(err)),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the app's log lines are incomplete after {}: {last}",
                    humantime::format_duration(self.args.timeout)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn remove(&self, router: &RouterProbe) -> anyhow::Result<()> {
        let args = remove::Args {
            apps: vec![self.app.to_string()],
        };
        let mut details = self.details();
        remove::run(&args, &self.inner, &mut details).await?;
        details.flush()?;
        let deadline = Instant::now() + self.args.timeout;
        loop {
            let left = self.what_is_left(router).await;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} is not gone after {}: {}",
                    self.app,
                    humantime::format_duration(self.args.timeout),
                    left.join("; ")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// What still shows the app: its desired LRP, its instances, its route.
    async fn what_is_left(&self, router: &RouterProbe) -> Vec<String> {
        let mut left = Vec::new();
        match self.client.desired_lrp(self.app).await {
            Err(err) if err.is_not_found() => {}
            Ok(_) => left.push("it is still desired".to_string()),
            Err(err) => left.push(format!("cannot read it: {err}")),
        }
        match self.client.actual_lrps_by_process_guid(self.app).await {
            Ok(actuals) if actuals.is_empty() => {}
            Ok(actuals) => left.push(format!(
                "instances left: {}",
                actuals
                    .iter()
                    .map(|a| format!("{} {}", a.index, a.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(err) => left.push(format!("cannot read its instances: {err}")),
        }
        match router.get("/").await {
            Ok(answer) if answer.status == 404 => {}
            Ok(answer) => left.push(format!("{} still answers {answer}", router.request("/"))),
            Err(err) => left.push(format!("{err:#}")),
        }
        left
    }

    /// Where create and scale print: under the step with `--verbose`,
    /// nowhere otherwise.
    fn details(&self) -> Details {
        Details {
            stderr: self.verbose.clone(),
            pending: Vec::new(),
        }
    }

    /// A detail line, shown with `--verbose`.
    fn say(&self, line: &str) {
        if let Some(stderr) = &self.verbose {
            stderr.line(&format!("  {line}"));
        }
    }
}

/// `ltc create`'s own flags, parsed as its command line is, so that the
/// test app gets exactly the defaults a user's app gets.
#[derive(Debug, clap::Parser)]
struct CreateLine {
    #[command(flatten)]
    args: create::Args,
}

/// A `Write` that sends each complete line to stderr, indented under the
/// step (create and scale write their results to a `Write`), or nowhere.
struct Details {
    stderr: Option<Stderr>,
    pending: Vec<u8>,
}

impl Write for Details {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let Some(stderr) = &self.stderr else {
            return Ok(bytes.len());
        };
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            stderr.line(&format!(
                "  {}",
                String::from_utf8_lossy(&line[..line.len() - 1])
            ));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(stderr) = &self.stderr {
            if !self.pending.is_empty() {
                stderr.line(&format!("  {}", String::from_utf8_lossy(&self.pending)));
                self.pending.clear();
            }
        }
        Ok(())
    }
}

/// The router, asked for one host.
struct RouterProbe {
    http: reqwest::Client,
    base: reqwest::Url,
    host: String,
}

/// What the router answered: the status and the body's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.body.lines().next().unwrap_or("").trim();
        write!(f, "{} {first:?}", self.status)
    }
}

impl RouterProbe {
    fn new(http: reqwest::Client, address: &str, host: String) -> anyhow::Result<RouterProbe> {
        let base = reqwest::Url::parse(&format!("http://{address}/"))
            .with_context(|| format!("the router's address {address:?} is not host:port"))?;
        Ok(RouterProbe { http, base, host })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let url = self.base.join(path.trim_start_matches('/'))?;
        let response = self
            .http
            .get(url)
            // The router picks the app by Host, as for a browser that
            // resolved APP.DOMAIN to it.
            .header(reqwest::header::HOST, &self.host)
            .send()
            .await
            .with_context(|| format!("{} failed", self.request(path)))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .with_context(|| format!("{} sent no readable answer", self.request(path)))?;
        Ok(Answer { status, body })
    }
}

impl RouterProbe {
    /// `GET http://127.0.0.1:8080/index (Host: APP.localhost)`, for messages.
    fn request(&self, path: &str) -> String {
        let address = self.base.as_str().trim_end_matches('/');
        format!("GET {address}{path} (Host: {})", self.host)
    }
}

/// The instance index the sample app answered `/index` with, if it did.
pub fn answered_index(answer: &Answer) -> Option<i64> {
    if answer.status != 200 {
        return None;
    }
    answer
        .body
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|index| (0..SCALED_INSTANCES).contains(index))
}

/// What the app's log lines lack: a CELL line, and from each of the
/// `instances`, an APP line of a `/index` request (the sample app logs one
/// line per request).
pub fn missing_lines(lines: &[LogMessage], instances: i64) -> Vec<String> {
    let mut missing = Vec::new();
    if !lines.iter().any(|line| line.source_type == SOURCE_CELL) {
        missing.push("CELL line".to_string());
    }
    let requested: BTreeSet<&str> = lines
        .iter()
        .filter(|line| line.source_type == SOURCE_APP && line.message.contains("/index"))
        .map(|line| line.source_instance.as_str())
        .collect();
    for index in 0..instances {
        if !requested.contains(index.to_string().as_str()) {
            missing.push(format!(
                "APP line of a /index request from instance {index}"
            ));
        }
    }
    missing
}

fn list(indexes: &BTreeSet<i64>) -> String {
    indexes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes what the test may have left: the app, and its staging tasks
/// (cancelled first if they did not finish). Tries everything, then says
/// what it removed.
///
/// # Errors
/// Every removal that failed, one a line.
async fn clean_up(client: &Client, app: &str) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    match client.delete_desired_lrp(app).await {
        Ok(()) => done.push(format!("removed app {app}")),
        Err(err) if err.is_not_found() => {}
        Err(err) => failures.push(format!("cannot remove {app}: {err}")),
    }
    match client.tasks_by_domain(create::STAGING_DOMAIN).await {
        Ok(tasks) => {
            let prefix = format!("{app}-staging-");
            // The log guid tells ours from those of an app whose name
            // starts with ours.
            let ours = tasks
                .iter()
                .filter(|t| t.task_guid.starts_with(&prefix) && t.log_guid == app);
            for task in ours {
                let guid = &task.task_guid;
                if task.state != TaskState::Completed {
                    // Cancelling completes it; if it completed meanwhile,
                    // the delete copes with that either way.
                    let _ = client.cancel_task(guid).await;
                }
                match client.delete_task(guid).await {
                    Ok(()) => done.push(format!("deleted staging task {guid}")),
                    Err(err) => failures.push(format!("cannot delete task {guid}: {err}")),
                }
            }
        }
        Err(err) => failures.push(format!("cannot list the staging tasks: {err}")),
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(anyhow::Error::msg(failures.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, TaskFilter};
    use lattice_models::log::MessageType;
    use lattice_models::Event;
    use lattice_receptor::ReceptorConfig;

    use super::*;
    use lattice_models::lifecycle::{HEALTHCHECK_PATH, LAUNCHER_PATH};
    use lattice_testkit::cluster::Script;

    use crate::testing::{app_cluster, log_line, no_restarts, output, FakeRouter, TestReceptor};

    /// A limit no step of these tests comes near; it only keeps a broken
    /// test from hanging.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    // --- the report ---------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn steps_are_reported_with_their_time_and_reason() {
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, None);
        let value = report
            .step("first", HANG_GUARD, async {
                tokio::time::sleep(Duration::from_millis(2100)).await;
                Ok(7)
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        let err = report
            .step("second", HANG_GUARD, async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err::<(), _>(anyhow!("boom\n  instance 0: CRASHED").context("cannot do it"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the cluster test failed: second");
        assert!(err.is::<StepFailed>());
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert_eq!(report.passed, 1);
        assert_eq!(
            output(out),
            "✓ first (2.1 s)\n\
             ✗ second (0.3 s)\n  \
             cannot do it: boom\n    \
             instance 0: CRASHED\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_never_ends_is_ended_by_its_backstop() {
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, None);
        let stuck = std::future::pending::<anyhow::Result<()>>();
        report
            .step("stuck", Duration::from_secs(90), stuck)
            .await
            .unwrap_err();
        assert_eq!(
            output(out),
            "✗ stuck (90.0 s)\n  did not finish within 1m 30s\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interruption_names_the_step_it_cut_short() {
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, None);
        report
            .step("quick", HANG_GUARD, async { Ok(()) })
            .await
            .unwrap();
        {
            let slow = report.step(
                "slow",
                HANG_GUARD,
                std::future::pending::<anyhow::Result<()>>(),
            );
            tokio::select! {
                _ = slow => panic!("a pending step cannot end before its backstop"),
                () = tokio::time::sleep(Duration::from_millis(1500)) => {}
            }
        }
        report.interrupted().unwrap();
        report.interrupted().unwrap();
        assert_eq!(
            output(out),
            "✓ quick (0.0 s)\n✗ slow (1.5 s)\n  interrupted\n✗ interrupted\n"
        );
    }

    // --- the checks ---------------------------------------------------------

    #[test]
    fn only_the_index_of_a_scaled_instance_counts() {
        let answer = |status, body: &str| Answer {
            status,
            body: body.to_string(),
        };
        assert_eq!(answered_index(&answer(200, "2\n")), Some(2));
        assert_eq!(answered_index(&answer(200, "0")), Some(0));
        assert_eq!(answered_index(&answer(200, "3\n")), None, "not scaled to");
        assert_eq!(answered_index(&answer(404, "1\n")), None);
        assert_eq!(
            answered_index(&answer(200, "lattice-app: instance 1")),
            None
        );
        assert_eq!(
            answer(404, "unknown route: x.localhost\nmore").to_string(),
            "404 \"unknown route: x.localhost\""
        );
    }

    #[test]
    fn the_logs_need_a_cell_line_and_a_request_line_of_each_instance() {
        let line =
            |source, instance, text| log_line("app", source, instance, text, MessageType::Out);
        let request = |i| {
            line(
                SOURCE_APP,
                i,
                "lattice-app instance N: GET /index -> 200 OK",
            )
        };
        let mut lines = vec![
            line(SOURCE_APP, "0", "lattice-app listening on port 8080"),
            request("0"),
            request("2"),
            line("RTR", "1", "GET /index 200"),
        ];
        assert_eq!(
            missing_lines(&lines, 3),
            ["CELL line", "APP line of a /index request from instance 1"]
        );
        lines.push(line(SOURCE_CELL, "1", "Creating container"));
        lines.push(request("1"));
        assert!(missing_lines(&lines, 3).is_empty());
        assert_eq!(
            missing_lines(&[], 1),
            ["CELL line", "APP line of a /index request from instance 0"]
        );
    }

    // --- the whole command --------------------------------------------------

    /// What the builder finds in lattice/lattice-app.
    fn sample_staged() -> String {
        r#"{"start_command": ["/bin/lattice-app"], "ports": [8080], "user": "", "working_dir": "/"}"#
            .to_string()
    }

    /// The report with the app's name, the target and the timings, which
    /// change from run to run, replaced.
    fn normalized(out: Vec<u8>, ctx: &Context) -> String {
        let text = output(out);
        let app = text
            .split_once("with app ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .expect("the report names the app")
            .to_string();
        assert!(app.starts_with(APP_PREFIX) && app.len() == APP_PREFIX.len() + 6);
        text.lines()
            .map(|line| {
                let line = line.replace(&app, "APP").replace(&ctx.target.url, "URL");
                match line.rsplit_once(" (") {
                    Some((step, time)) if line.starts_with(['✓', '✗']) && time.ends_with(" s)") => {
                        step.to_string()
                    }
                    _ => line,
                }
            })
            .map(|line| line + "\n")
            .collect()
    }

    async fn run_test(
        receptor: &TestReceptor,
        args: &Args,
        stop: impl Future<Output = ()>,
    ) -> (anyhow::Result<()>, String, String) {
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        let mut out = Vec::new();
        let result = tokio::time::timeout(HANG_GUARD, run(args, &ctx, &mut out, stop))
            .await
            .expect("the test ends");
        (result, normalized(out, &ctx), stderr.contents())
    }

    /// Nothing of the test is left in the store.
    async fn assert_nothing_left(receptor: &TestReceptor) {
        let desired = receptor
            .store
            .list_desired_lrps(&DesiredLrpFilter::default())
            .await
            .unwrap();
        assert!(desired.is_empty(), "{desired:?}");
        let tasks = receptor
            .store
            .list_tasks(&TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "{tasks:?}");
    }

    #[tokio::test]
    async fn every_step_passes_on_a_cluster_with_a_router() {
        let (listener, address) = FakeRouter::bind().await;
        let receptor =
            TestReceptor::with_cluster(app_cluster(&sample_staged()).receptor(ReceptorConfig {
                router_address: Some(address.to_string()),
                ..Default::default()
            }))
            .await;
        let _router = FakeRouter::start(listener, &receptor);
        let args = Args {
            timeout: Duration::from_secs(30),
            verbose: true,
        };
        let (result, report, details) = run_test(&receptor, &args, std::future::pending()).await;
        result.unwrap();
        assert_eq!(
            report,
            "Testing the cluster at URL with app APP (30s per wait)\n\
             ✓ reach the receptor\n\
             ✓ create app\n\
             ✓ reach the app through the router\n\
             ✓ scale to 3 instances\n\
             ✓ reach every instance through the router\n\
             ✓ read the app's logs\n\
             ✓ remove app\n\
             All 7 steps passed.\n"
        );
        // --verbose shows what create and scale print, the router's answers
        // and the app's lines.
        for shown in [
            "  Staged lattice/lattice-app: start command /bin/lattice-app",
            "  Created lattice-test-",
            "/index (Host: lattice-test-",
            ") reached instances 0, 1, 2 in ",
            "is now running 3 instances.",
            "[CELL/2] Creating container",
            "[APP/1] lattice-app instance 1: GET /index -> 200 OK",
            "  Removed lattice-test-",
        ] {
            assert!(details.contains(shown), "no {shown:?} in:\n{details}");
        }
        assert_nothing_left(&receptor).await;
        let actuals = receptor
            .store
            .list_actual_lrps(&ActualLrpFilter::default())
            .await
            .unwrap();
        assert!(actuals.is_empty(), "the test saw them gone: {actuals:?}");
    }

    #[tokio::test]
    async fn without_a_router_the_routing_step_fails_and_the_app_is_removed() {
        let receptor = TestReceptor::with_cluster(app_cluster(&sample_staged())).await;
        let args = Args {
            timeout: Duration::from_secs(30),
            verbose: false,
        };
        let (result, report, details) = run_test(&receptor, &args, std::future::pending()).await;
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the cluster test failed: reach the app through the router"
        );
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert_eq!(
            report,
            "Testing the cluster at URL with app APP (30s per wait)\n\
             ✓ reach the receptor\n\
             ✓ create app\n\
             ✗ reach the app through the router\n  \
             the cluster has no router: /v1/info says router_address is null \
             (`lattice up` runs one unless told not to)\n\
             Cleaned up: removed app APP\n"
        );
        assert_eq!(details, "", "without --verbose, only the report");
        assert_nothing_left(&receptor).await;
    }

    #[tokio::test]
    async fn an_app_that_does_not_start_fails_the_test_with_1_not_3() {
        let receptor = TestReceptor::with_cluster(
            app_cluster(&sample_staged())
                .script(LAUNCHER_PATH, Script::exits(1))
                .policy(no_restarts()),
        )
        .await;
        let args = Args {
            timeout: Duration::from_millis(500),
            verbose: false,
        };
        let (result, report, _) = run_test(&receptor, &args, std::future::pending()).await;
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "the cluster test failed: create app");
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert!(
            report.contains(
                "✗ create app\n  APP is not running after 500ms: 0 of 1 instances RUNNING"
            ),
            "{report}"
        );
        assert!(
            report.contains("    instance 0: CRASHED (1 crash, last: Exited with status 1)\n"),
            "{report}"
        );
        assert!(
            report.ends_with("Cleaned up: removed app APP\n"),
            "{report}"
        );
        assert_nothing_left(&receptor).await;
    }

    /// Completes once the store announces an event that `is_it`: a Ctrl-C
    /// at that point. Subscribed before it is returned, so before the
    /// command runs: the event cannot be missed.
    fn once(receptor: &TestReceptor, is_it: fn(&Event) -> bool) -> impl Future<Output = ()> {
        let mut events = receptor.store.subscribe();
        async move {
            loop {
                match events.recv().await {
                    Ok(event) if is_it(&event) => return,
                    Ok(_) => {}
                    Err(err) => panic!("the store's change feed failed: {err}"),
                }
            }
        }
    }

    /// Ctrl-C while staging.
    fn once_a_task_is_stored(receptor: &TestReceptor) -> impl Future<Output = ()> {
        once(receptor, |event| matches!(event, Event::TaskCreated { .. }))
    }

    /// Ctrl-C while the app starts.
    fn once_an_app_is_stored(receptor: &TestReceptor) -> impl Future<Output = ()> {
        once(receptor, |event| {
            matches!(event, Event::DesiredLrpCreated { .. })
        })
    }

    #[tokio::test]
    async fn an_interruption_while_staging_deletes_the_staging_task() {
        // No cell: the staging task stays PENDING until Ctrl-C.
        let receptor = TestReceptor::start().await;
        let args = Args {
            timeout: Duration::from_secs(30),
            verbose: false,
        };
        let ctrl_c = once_a_task_is_stored(&receptor);
        let (result, report, _) = run_test(&receptor, &args, ctrl_c).await;
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "the cluster test was interrupted");
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert!(
            report.contains(
                "✓ reach the receptor\n✗ create app\n  interrupted\n\
                 Cleaned up: deleted staging task APP-staging-"
            ),
            "{report}"
        );
        assert_nothing_left(&receptor).await;
    }

    #[tokio::test]
    async fn an_interruption_while_starting_removes_the_app() {
        // Instances never pass their health check: the wait lasts until
        // Ctrl-C.
        let receptor = TestReceptor::with_cluster(
            app_cluster(&sample_staged()).script(HEALTHCHECK_PATH, Script::exits(1)),
        )
        .await;
        let args = Args {
            timeout: Duration::from_secs(30),
            verbose: false,
        };
        let ctrl_c = once_an_app_is_stored(&receptor);
        let (result, report, _) = run_test(&receptor, &args, ctrl_c).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "the cluster test was interrupted"
        );
        assert!(
            report.ends_with("✗ create app\n  interrupted\nCleaned up: removed app APP\n"),
            "{report}"
        );
        assert_nothing_left(&receptor).await;
    }
}
