//! `ltc scale APP N`: change the number of instances and wait until exactly
//! the first N are RUNNING and the others are gone, showing the app's log
//! lines (the cell's and the app's) meanwhile.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use lattice_models::lrp::MAX_INSTANCES;
use lattice_models::DesiredLrpUpdateRequest;

use crate::log_stream::{LineFormat, LogTail};
use crate::progress::Spinner;
use crate::wait::{self, AppLogs};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc scale hello 5
  # Stop every instance but keep the app
  ltc scale hello 0
  ltc scale hello 20 --timeout 5m";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name.
    pub app: String,

    /// How many instances it should run.
    #[arg(value_parser = clap::value_parser!(i64).range(0..=MAX_INSTANCES))]
    pub instances: i64,

    /// How long to wait for the instances; past it ltc exits with 3 (the
    /// new count stays desired).
    #[arg(long, default_value = "2m", value_parser = crate::output::parse_rate)]
    pub timeout: Duration,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let app = &args.app;
    let client = ctx.client()?;
    // Read for its log guid (an app submitted as JSON may have its own).
    let lrp = client
        .desired_lrp(app)
        .await
        .with_context(|| format!("cannot scale {app}"))?;
    let log_guid = if lrp.log_guid.is_empty() {
        app.clone()
    } else {
        lrp.log_guid
    };
    let logs = ctx.logs_client()?;
    let format = LineFormat::new(ctx.stderr.color);
    let mut tail = LogTail::start(logs.clone(), &log_guid, format).await;

    let update = DesiredLrpUpdateRequest {
        instances: Some(args.instances),
        ..Default::default()
    };
    client
        .update_desired_lrp(app, &update)
        .await
        .with_context(|| format!("cannot scale {app}"))?;
    let spinner = Spinner::new(
        &ctx.stderr,
        format!("Scaling {app} to {}...", args.instances),
    );
    let app_logs = AppLogs {
        client: &logs,
        log_guid: &log_guid,
    };
    let wait = wait::wait_for_instances(
        &client,
        app_logs,
        app,
        args.instances,
        args.timeout,
        &spinner,
    );
    tail.show_while(wait, &spinner).await?;
    drop(tail);
    drop(spinner);
    match args.instances {
        0 => writeln!(out, "{app} is scaled to 0 instances.")?,
        1 => writeln!(out, "{app} is now running 1 instance.")?,
        n => writeln!(out, "{app} is now running {n} instances.")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lattice_bbs::ActualLrpFilter;
    use lattice_models::log::MessageType;

    use super::*;
    use crate::testing::{app_cluster, app_request, log_line, output, TestReceptor};

    fn args(app: &str, instances: i64, timeout: Duration) -> Args {
        Args {
            app: app.into(),
            instances,
            timeout,
        }
    }

    async fn instances(receptor: &TestReceptor) -> Vec<i64> {
        let filter = ActualLrpFilter::default();
        let actuals = receptor.store.list_actual_lrps(&filter).await.unwrap();
        actuals.iter().map(|a| a.index).collect()
    }

    #[tokio::test]
    async fn scales_up_and_down_and_waits() {
        let receptor = TestReceptor::with_cluster(app_cluster("{}")).await;
        let ctx = receptor.context(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 1))
            .await
            .unwrap();
        let long = Duration::from_secs(20);

        let mut out = Vec::new();
        run(&args("web", 3, long), &ctx, &mut out).await.unwrap();
        assert_eq!(output(out), "web is now running 3 instances.\n");
        assert_eq!(instances(&receptor).await, [0, 1, 2]);

        let mut out = Vec::new();
        run(&args("web", 1, long), &ctx, &mut out).await.unwrap();
        assert_eq!(output(out), "web is now running 1 instance.\n");
        assert_eq!(
            instances(&receptor).await,
            [0],
            "waited for the extras to go"
        );

        let mut out = Vec::new();
        run(&args("web", 0, long), &ctx, &mut out).await.unwrap();
        assert_eq!(output(out), "web is scaled to 0 instances.\n");
        assert!(instances(&receptor).await.is_empty());
    }

    #[tokio::test]
    async fn instances_that_cannot_be_placed_exit_with_3() {
        // No room for an instance (128 MB).
        let receptor = TestReceptor::with_cluster(app_cluster("{}").memory_mb(64)).await;
        let ctx = receptor.context(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 0))
            .await
            .unwrap();
        let err = run(
            &args("web", 2, Duration::from_millis(400)),
            &ctx,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(crate::exit_code(&err), crate::EXIT_PLACEMENT);
        let message = format!("{err:#}");
        assert!(message.contains("0 of 2 instances RUNNING"), "{message}");
        assert!(
            message.contains(
                "instance 1: UNCLAIMED, placement failed: insufficient resources: \
                 no cell has 128 MB memory"
            ),
            "{message}"
        );
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(lrp.instances, 2, "the new count stays desired");
    }

    #[tokio::test]
    async fn a_timeout_shows_the_last_lines_of_the_failing_instances() {
        let receptor = TestReceptor::with_cluster(app_cluster("{}").memory_mb(64)).await;
        let ctx = receptor.context(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 0))
            .await
            .unwrap();
        // What an earlier life of instance 0 said, more than is shown.
        for n in 1..=12 {
            let kind = if n == 12 {
                MessageType::Err
            } else {
                MessageType::Out
            };
            let text = format!("line {n}");
            receptor
                .hub
                .publish(log_line("web", "APP", "0", &text, kind));
        }
        receptor.hub.publish(log_line(
            "web",
            "APP",
            "5",
            "not a wanted instance",
            MessageType::Out,
        ));
        let err = run(
            &args("web", 1, Duration::from_millis(300)),
            &ctx,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        let message = format!("{err:#}");
        let shown: Vec<&str> = message
            .lines()
            .skip_while(|l| !l.contains("last log lines"))
            .collect();
        assert_eq!(shown[0], "  last log lines of instance 0:", "{message}");
        let untimed: Vec<&str> = shown[1..11].iter().map(|l| &l[4 + 13..]).collect();
        let expected: Vec<String> = (3..=11)
            .map(|n| format!("[APP/0] line {n}"))
            .chain(["[APP/0] ERR line 12".to_string()])
            .collect();
        assert_eq!(untimed, expected, "{message}");
        assert!(shown[11].starts_with("  web stays desired"), "{message}");
    }

    #[tokio::test]
    async fn an_unknown_app_is_an_error() {
        let receptor = TestReceptor::start().await;
        let err = run(
            &args("nope", 2, Duration::from_secs(1)),
            &receptor.context(&[]),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot scale nope: desired LRP \"nope\" not found"
        );
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
    }
}
