//! `ltc logs APP`: the app's recent log lines, then its live ones until
//! Ctrl-C (`--recent`: only the recent ones).
//!
//! Lines come from the log hub the receptor serves (`GET /v1/logs/{guid}`).
//! An app that does not exist is not an error: it may be about to be
//! created, and a task's or a deleted app's lines are still there. It is
//! said once on stderr when there is nothing to show either.
//!
//! # Errors
//! The first request's failure (a wrong target or password, a server
//! without the log routes). A lost connection afterwards is reconnected;
//! see [`LiveLogs`].

use std::future::Future;
use std::io::Write;

use anyhow::Context as _;
use lattice_models::log::LogFilter;
use lattice_models::log::{SOURCE_APP, SOURCE_CELL, SOURCE_HEALTH, SOURCE_ROUTER, SOURCE_STAGING};

use crate::log_stream::{Event, LineFormat, LiveLogs, Source};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc logs hello
  ltc logs hello --recent
  # Only what instance 2 itself printed
  ltc logs hello --source APP --instance 2";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name.
    pub app: String,

    /// Print the recent lines and exit instead of following.
    #[arg(long)]
    pub recent: bool,

    /// Only lines from this source: the app itself (APP), staging (STG), the
    /// cell about the app's containers (CELL), health checks (HEALTH) or the
    /// router (RTR).
    #[arg(long, value_enum, ignore_case = true)]
    pub source: Option<LogSource>,

    /// Only lines of this instance index.
    #[arg(long, value_name = "INDEX")]
    pub instance: Option<u32>,
}

/// The sources `--source` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogSource {
    #[value(name = "APP")]
    App,
    #[value(name = "STG")]
    Stg,
    #[value(name = "CELL")]
    Cell,
    #[value(name = "HEALTH")]
    Health,
    #[value(name = "RTR")]
    Rtr,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::App => SOURCE_APP,
            LogSource::Stg => SOURCE_STAGING,
            LogSource::Cell => SOURCE_CELL,
            LogSource::Health => SOURCE_HEALTH,
            LogSource::Rtr => SOURCE_ROUTER,
        }
    }
}

/// Runs the command until `stop` completes (Ctrl-C for ltc), which is a
/// success.
pub async fn run(
    args: &Args,
    ctx: &Context,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = &args.app;
    let client = ctx.client()?;
    let logs = ctx.logs_client()?;
    // The lines are under the app's log guid: its name for the apps ltc
    // creates, anything for one submitted as JSON.
    let (log_guid, exists) = match client.desired_lrp(app).await {
        Ok(lrp) if !lrp.log_guid.is_empty() => (lrp.log_guid, true),
        Ok(_) => (app.clone(), true),
        Err(err) if err.is_not_found() => (app.clone(), false),
        Err(err) => return Err(err).with_context(|| format!("cannot read app {app}")),
    };
    let filter = LogFilter {
        source: args.source.map(|s| s.as_str().to_string()),
        instance: args.instance.map(|i| i.to_string()),
    };
    let format = LineFormat::new(ctx.color);
    let no_app = format!("{app} is not an app on this cluster, and has no recent log lines");

    if args.recent {
        let lines = logs
            .recent(&log_guid, &filter)
            .await
            .with_context(|| format!("cannot read the logs of {app}"))?;
        if lines.is_empty() && !exists {
            ctx.stderr.line(&no_app);
        }
        for line in &lines {
            writeln!(out, "{}", format.render(line))?;
        }
        return Ok(());
    }

    if !exists {
        // Asked apart from the follow only to say whether anything is
        // there: the follow's own recent lines are not told from live ones.
        let recent = logs
            .recent(&log_guid, &filter)
            .await
            .with_context(|| format!("cannot read the logs of {app}"))?;
        if recent.is_empty() {
            ctx.stderr
                .line(&format!("{no_app}; waiting for lines (Ctrl-C to stop)"));
        }
    }
    let source = Source::App { log_guid, filter };
    let live = LiveLogs::connect(logs, source, true)
        .await
        .with_context(|| format!("cannot follow the logs of {app}"))?;
    follow(live, ctx, out, stop, |line| format.render(line))
        .await
        .with_context(|| format!("cannot follow the logs of {app}"))
}

/// Prints the lines of `live` on `out` (as `render` shows them) and its
/// notices on stderr until `stop` completes.
pub async fn follow(
    mut live: LiveLogs,
    ctx: &Context,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
    render: impl Fn(&lattice_models::log::LogMessage) -> String,
) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => return Ok(()),
            event = live.next() => event?,
        };
        match event {
            Event::Line(line) => {
                writeln!(out, "{}", render(&line))?;
                // Shown as it comes, not when a buffer fills.
                out.flush()?;
            }
            Event::Notice(notice) => ctx.stderr.line(&notice),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use lattice_models::log::MessageType;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::log_stream::LOST;
    use crate::testing::{app_request, eventually, log_line, output, SharedBuffer, TestReceptor};

    fn args(argv: &[&str]) -> Args {
        let argv = ["ltc", "logs"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv)
            .expect("valid test arguments")
            .command
        {
            Command::Logs(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The lines without their local time (`HH:MM:SS.mmm `), which depends
    /// on the machine's time zone.
    fn untimed(text: &str) -> Vec<String> {
        text.lines().map(|l| l[13..].to_string()).collect()
    }

    fn publish(receptor: &TestReceptor, guid: &str, source: &str, index: &str, text: &str) {
        receptor
            .hub
            .publish(log_line(guid, source, index, text, MessageType::Out));
    }

    #[test]
    fn sources_are_checked_and_any_case_is_accepted() {
        assert_eq!(
            args(&["web", "--source", "cell"]).source,
            Some(LogSource::Cell)
        );
        assert_eq!(
            args(&["web", "--source", "RTR"]).source,
            Some(LogSource::Rtr)
        );
        let err = Cli::try_parse_from(["ltc", "logs", "web", "--source", "DB"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE));
    }

    #[tokio::test]
    async fn recent_prints_the_lines_filtered_by_source_and_instance() {
        let receptor = TestReceptor::start().await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 2))
            .await
            .unwrap();
        publish(&receptor, "web", "CELL", "0", "Creating container");
        publish(&receptor, "web", "APP", "0", "listening on 8080");
        publish(&receptor, "web", "APP", "1", "listening on 8080 too");
        receptor
            .hub
            .publish(log_line("web", "APP", "1", "oops", MessageType::Err));
        publish(&receptor, "other", "APP", "0", "not web's");

        let recent = async |argv: &[&str]| {
            let mut out = Vec::new();
            run(&args(argv), &ctx, &mut out, std::future::pending())
                .await
                .unwrap();
            untimed(&output(out))
        };
        assert_eq!(
            recent(&["web", "--recent"]).await,
            [
                "[CELL/0] Creating container",
                "[APP/0] listening on 8080",
                "[APP/1] listening on 8080 too",
                "[APP/1] ERR oops"
            ]
        );
        assert_eq!(
            recent(&["web", "--recent", "--source", "app", "--instance", "1"]).await,
            ["[APP/1] listening on 8080 too", "[APP/1] ERR oops"]
        );
        assert_eq!(
            recent(&["web", "--recent", "--source", "CELL"]).await,
            ["[CELL/0] Creating container"]
        );
        assert!(recent(&["web", "--recent", "--instance", "7"])
            .await
            .is_empty());
        assert_eq!(stderr.contents(), "", "the app exists");
    }

    #[tokio::test]
    async fn a_missing_app_is_said_once_only_when_it_has_no_lines() {
        let receptor = TestReceptor::start().await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        let mut out = Vec::new();
        run(
            &args(&["ghost", "--recent"]),
            &ctx,
            &mut out,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(output(out), "");
        assert_eq!(
            stderr.contents(),
            "ghost is not an app on this cluster, and has no recent log lines\n"
        );

        // A task's (or a deleted app's) lines are shown without a word.
        publish(&receptor, "job", "CELL", "", "Task succeeded");
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        let mut out = Vec::new();
        run(
            &args(&["job", "--recent"]),
            &ctx,
            &mut out,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(untimed(&output(out)), ["[CELL] Task succeeded"]);
        assert_eq!(stderr.contents(), "");
    }

    #[tokio::test]
    async fn an_app_submitted_with_its_own_log_guid_is_read_under_it() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let mut request = app_request("web", 1);
        request.log_guid = "web-logs".into();
        ctx.client()
            .unwrap()
            .create_desired_lrp(&request)
            .await
            .unwrap();
        publish(&receptor, "web-logs", "APP", "0", "hello");
        let mut out = Vec::new();
        run(
            &args(&["web", "--recent"]),
            &ctx,
            &mut out,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(untimed(&output(out)), ["[APP/0] hello"]);
    }

    #[tokio::test]
    async fn follow_prints_recent_then_live_lines_until_stopped() {
        let receptor = TestReceptor::start().await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        publish(&receptor, "web", "APP", "0", "before");
        let out = SharedBuffer::default();
        let mut writer = out.clone();
        let stop = CancellationToken::new();
        let args = args(&["web", "--source", "APP"]);
        let command = run(&args, &ctx, &mut writer, stop.clone().cancelled_owned());
        let driver = async {
            eventually("ltc follows web", || {
                receptor.hub.follower_count("web") == 1
            })
            .await;
            publish(&receptor, "web", "CELL", "0", "filtered out");
            publish(&receptor, "web", "APP", "0", "live");
            eventually("the live line is printed", || {
                out.contents().contains("live")
            })
            .await;
            stop.cancel();
        };
        let (result, ()) = tokio::join!(command, driver);
        result.expect("Ctrl-C is a success");
        assert_eq!(untimed(&out.contents()), ["[APP/0] before", "[APP/0] live"]);
        assert_eq!(
            stderr.contents(),
            "",
            "web has a recent line: nothing to say"
        );
        eventually("the follow is closed on the server", || {
            receptor.hub.follower_count("web") == 0
        })
        .await;
    }

    #[tokio::test]
    async fn following_a_missing_app_without_lines_says_so_once() {
        let receptor = TestReceptor::start().await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        let out = SharedBuffer::default();
        let mut writer = out.clone();
        let stop = CancellationToken::new();
        let args = args(&["soon"]);
        let command = run(&args, &ctx, &mut writer, stop.clone().cancelled_owned());
        let driver = async {
            eventually("ltc follows soon", || {
                receptor.hub.follower_count("soon") == 1
            })
            .await;
            publish(&receptor, "soon", "CELL", "0", "Creating container");
            publish(&receptor, "soon", "APP", "0", "up");
            eventually("both lines are printed", || {
                out.contents().lines().count() == 2
            })
            .await;
            stop.cancel();
        };
        let (result, ()) = tokio::join!(command, driver);
        result.unwrap();
        assert_eq!(
            stderr.contents(),
            "soon is not an app on this cluster, and has no recent log lines; \
             waiting for lines (Ctrl-C to stop)\n"
        );
    }

    #[tokio::test]
    async fn a_lost_stream_is_reconnected_without_repeating_lines() {
        let mut receptor = TestReceptor::start().await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        publish(&receptor, "web", "APP", "0", "first");
        let out = SharedBuffer::default();
        let mut writer = out.clone();
        let stop = CancellationToken::new();
        let args = args(&["web"]);
        let command = run(&args, &ctx, &mut writer, stop.clone().cancelled_owned());
        let driver = async {
            eventually("the recent line is printed", || {
                out.contents().contains("first")
            })
            .await;
            // The server ends every stream as it shuts down.
            receptor.restart().await;
            eventually("ltc follows web again", || {
                receptor.hub.follower_count("web") == 1
            })
            .await;
            publish(&receptor, "web", "APP", "0", "second");
            eventually("the new line is printed", || {
                out.contents().contains("second")
            })
            .await;
            stop.cancel();
        };
        let (result, ()) = tokio::join!(command, driver);
        result.unwrap();
        assert_eq!(
            untimed(&out.contents()),
            ["[APP/0] first", "[APP/0] second"],
            "reconnected without the recent lines"
        );
        let notices = stderr.contents();
        assert!(notices.starts_with(&format!("{LOST}\n")), "{notices}");
        assert!(notices.contains("reconnected"), "{notices}");
    }
}
