//! `ltc debug-logs`: the cluster's own logs (receptor, brain, cells), recent
//! then live until Ctrl-C, as `ltc logs` shows an app's.
//!
//! Each line is a component's tracing event. The server renders it as
//! `LEVEL message key=value ...` (tagged with the component, and the cell
//! for a cell's), or leaves it as its JSON object with `--raw`, which is
//! printed as it is, one object a line, for `jq`.

use std::future::Future;
use std::io::Write;

use anyhow::Context as _;
use lattice_models::log::LogFilter;

use crate::commands::logs::follow;
use crate::log_stream::{LineFormat, LiveLogs, Source};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc debug-logs
  ltc debug-logs --source rep --recent
  # As JSON objects, one a line
  ltc debug-logs --raw | jq .";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print each line as the JSON object the component logged (timestamp,
    /// level, target, fields, spans), one a line.
    #[arg(long)]
    pub raw: bool,

    /// Print the recent lines and exit instead of following.
    #[arg(long)]
    pub recent: bool,

    /// Only lines of this component: receptor, bbs, auctioneer, converger,
    /// rep, executor, garden, router, ...
    #[arg(long, value_name = "COMPONENT")]
    pub source: Option<String>,
}

/// Runs the command until `stop` completes (Ctrl-C for ltc), which is a
/// success.
pub async fn run(
    args: &Args,
    ctx: &Context,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let logs = ctx.logs_client()?;
    let filter = LogFilter {
        source: args.source.clone(),
        instance: None,
    };
    // A warning or an error says so with its level.
    let format = LineFormat::new(ctx.color).without_err_marker();
    let raw = args.raw;
    let render = |line: &lattice_models::log::LogMessage| {
        if raw {
            line.message.clone()
        } else {
            format.render(line)
        }
    };
    if args.recent {
        let lines = logs
            .debug_recent(&filter, raw)
            .await
            .context("cannot read the cluster's logs")?;
        for line in &lines {
            writeln!(out, "{}", render(line))?;
        }
        return Ok(());
    }
    let live = LiveLogs::connect(logs, Source::Debug { filter, raw }, true)
        .await
        .context("cannot follow the cluster's logs")?;
    follow(live, ctx, out, stop, render)
        .await
        .context("cannot follow the cluster's logs")
}

#[cfg(test)]
mod tests {
    use lattice_models::log::MessageType;
    use lattice_models::log::DEBUG_LOG_GUID;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::testing::{eventually, log_line, output, SharedBuffer, TestReceptor};

    fn args(raw: bool, recent: bool, source: Option<&str>) -> Args {
        Args {
            raw,
            recent,
            source: source.map(str::to_string),
        }
    }

    const RECEPTOR_LINE: &str = r#"{"timestamp":"2024-01-01T00:00:00.000000001Z","level":"INFO","target":"lattice_receptor::tasks","fields":{"message":"task created","task_guid":"t1"}}"#;
    const REP_LINE: &str = r#"{"timestamp":"2024-01-01T00:00:00.000000002Z","level":"WARN","target":"lattice_rep","fields":{"message":"container failed"}}"#;

    fn publish_both(receptor: &TestReceptor) {
        let hub = &receptor.hub;
        hub.publish(log_line(
            DEBUG_LOG_GUID,
            "receptor",
            "",
            RECEPTOR_LINE,
            MessageType::Out,
        ));
        hub.publish(log_line(
            DEBUG_LOG_GUID,
            "rep",
            "cell-1",
            REP_LINE,
            MessageType::Err,
        ));
    }

    #[tokio::test]
    async fn recent_lines_rendered_raw_and_filtered() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        publish_both(&receptor);
        let recent = async |args: Args| {
            let mut out = Vec::new();
            run(&args, &ctx, &mut out, std::future::pending())
                .await
                .unwrap();
            output(out)
        };
        let rendered = recent(args(false, true, None)).await;
        let untimed: Vec<&str> = rendered.lines().map(|l| &l[13..]).collect();
        assert_eq!(
            untimed,
            [
                "[receptor] INFO task created task_guid=t1",
                "[rep/cell-1] WARN container failed"
            ]
        );
        assert_eq!(
            recent(args(true, true, None)).await,
            format!("{RECEPTOR_LINE}\n{REP_LINE}\n")
        );
        assert_eq!(
            recent(args(true, true, Some("rep"))).await,
            format!("{REP_LINE}\n")
        );
    }

    #[tokio::test]
    async fn follow_prints_live_lines_until_stopped() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let out = SharedBuffer::default();
        let mut writer = out.clone();
        let stop = CancellationToken::new();
        let args = args(true, false, None);
        let command = run(&args, &ctx, &mut writer, stop.clone().cancelled_owned());
        let driver = async {
            eventually("ltc follows the debug logs", || {
                receptor.hub.follower_count(DEBUG_LOG_GUID) == 1
            })
            .await;
            publish_both(&receptor);
            eventually("both lines are printed", || {
                out.contents().lines().count() == 2
            })
            .await;
            stop.cancel();
        };
        let (result, ()) = tokio::join!(command, driver);
        result.unwrap();
        assert_eq!(out.contents(), format!("{RECEPTOR_LINE}\n{REP_LINE}\n"));
    }
}
