//! `ltc status APP`: one app in detail, then a table of its instances with
//! what each uses (CPU, memory and disk against its limits, sampled by its
//! cell every 5 seconds).

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use lattice_client::Client;
use lattice_models::{unix_nanos, Action, ActualLrp, ActualLrpState, ContainerMetrics, DesiredLrp};
use serde::Serialize;

use crate::image::image_for_rootfs;
use crate::output::{self, age, or_dash};
use crate::routes::{http_urls, tcp_lines};
use crate::wait::Progress;
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc status hello
  # Every field of every instance, refreshed every 2 seconds until Ctrl-C
  ltc status hello --detailed --rate 2s
  ltc status hello --json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name.
    pub app: String,

    /// Refresh every RATE (e.g. 2s) until Ctrl-C.
    #[arg(long, value_name = "RATE", value_parser = output::parse_rate)]
    pub rate: Option<Duration>,

    /// Also show instance guids, modification tags, the monitor and the
    /// log guid.
    #[arg(long)]
    pub detailed: bool,

    /// Print `{"desired_lrp": ..., "actual_lrps": [...], "metrics": [...]}`
    /// in the receptor's JSON instead of tables (`metrics`: each instance's
    /// latest usage sample, from its cell).
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints: the receptor's own records, and the instances'
/// latest usage samples (`GET /v1/actual_lrps/APP/metrics`).
#[derive(Debug, Serialize)]
struct Status<'a> {
    desired_lrp: &'a DesiredLrp,
    actual_lrps: &'a [ActualLrp],
    metrics: &'a [ContainerMetrics],
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match args.rate {
        None => show(args, ctx, &client, out).await,
        Some(rate) => {
            let clear = ctx.color && !args.json;
            output::refresh(
                rate,
                clear,
                out,
                output::ctrl_c(),
                async |frame: &mut Vec<u8>| show(args, ctx, &client, frame).await,
            )
            .await
        }
    }
}

async fn show(
    args: &Args,
    ctx: &Context,
    client: &Client,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let app = &args.app;
    let desired = client
        .desired_lrp(app)
        .await
        .with_context(|| format!("cannot get app {app:?}"))?;
    let mut actuals = client
        .actual_lrps_by_process_guid(app)
        .await
        .with_context(|| format!("cannot get the instances of {app:?}"))?;
    actuals.sort_by_key(|a| a.index);
    // Usage is an addition of ours: a receptor without it (an older one,
    // or Diego's) still gets its status, with `-` for the figures.
    let metrics = client.actual_lrp_metrics(app).await.unwrap_or_default();
    if args.json {
        return output::write_json(
            out,
            &Status {
                desired_lrp: &desired,
                actual_lrps: &actuals,
                metrics: &metrics,
            },
        );
    }
    let info = client
        .info()
        .await
        .context("cannot read the cluster's router address")?;
    let details = details(
        &desired,
        &actuals,
        info.router_address.as_deref(),
        args.detailed,
    );
    output::write_table(out, &details)?;
    if actuals.is_empty() {
        writeln!(out, "No instances.")?;
    } else {
        let now = unix_nanos(SystemTime::now());
        output::write_table(
            out,
            &instances(&actuals, &metrics, now, args.detailed, ctx.color),
        )?;
    }
    Ok(())
}

fn details(
    lrp: &DesiredLrp,
    actuals: &[ActualLrp],
    router_address: Option<&str>,
    detailed: bool,
) -> comfy_table::Table {
    let progress = Progress::of(actuals, lrp.instances);
    let mut routes = http_urls(&lrp.routes, router_address);
    routes.extend(tcp_lines(&lrp.routes));
    let mut rows = vec![
        ("App", lrp.process_guid.clone()),
        ("Image", image_for_rootfs(&lrp.rootfs)),
        (
            "Instances",
            format!("{}/{} running", progress.running, lrp.instances),
        ),
        ("Memory", megabytes(lrp.memory_mb)),
        ("Disk", megabytes(lrp.disk_mb)),
        ("CPU weight", lrp.cpu_weight.to_string()),
        ("Ports", or_dash(&join(lrp.ports.iter(), ", "))),
        ("Routes", or_dash(&routes.join("\n"))),
        (
            "Env",
            or_dash(&join(
                lrp.env.iter().map(|v| format!("{}={}", v.name, v.value)),
                "\n",
            )),
        ),
    ];
    if detailed {
        rows.extend([
            ("Rootfs", lrp.rootfs.clone()),
            ("Domain", lrp.domain.clone()),
            ("Start timeout", format!("{}s", lrp.start_timeout)),
            ("Command", command(&lrp.action)),
            (
                "Monitor",
                lrp.monitor.as_ref().map_or("none".to_string(), command),
            ),
            ("Log guid", or_dash(&lrp.log_guid)),
            ("Modification tag", tag(&lrp.modification_tag)),
            ("Annotation", or_dash(&lrp.annotation)),
        ]);
    }
    output::details(&rows)
}

fn instances(
    actuals: &[ActualLrp],
    metrics: &[ContainerMetrics],
    now_nanos: i64,
    detailed: bool,
    color: bool,
) -> comfy_table::Table {
    let mut header = vec![
        "Index", "State", "Cell", "Address", "Ports", "CPU", "Memory", "Disk", "Crashes", "Since",
        "Details",
    ];
    if detailed {
        header.extend(["Instance guid", "Modification tag"]);
    }
    let mut table = output::table(&header);
    output::allow_color(&mut table, color);
    for actual in actuals {
        let sample = metrics
            .iter()
            .find(|m| m.index == actual.index && m.instance_guid == actual.instance_guid);
        let usage = |show: fn(&ContainerMetrics) -> String| sample.map_or("-".to_string(), show);
        let mut row = vec![
            comfy_table::Cell::new(actual.index),
            output::state_cell(actual.state.as_str(), actual.state, color),
            comfy_table::Cell::new(or_dash(&actual.cell_id)),
            comfy_table::Cell::new(instance_address(actual)),
            comfy_table::Cell::new(or_dash(&port_mappings(actual))),
            comfy_table::Cell::new(usage(|m| format!("{:.1}%", m.cpu_percentage))),
            comfy_table::Cell::new(usage(|m| used_of(m.memory_bytes, m.memory_bytes_quota))),
            comfy_table::Cell::new(usage(|m| used_of(m.disk_bytes, m.disk_bytes_quota))),
            comfy_table::Cell::new(actual.crash_count),
            comfy_table::Cell::new(age(actual.since, now_nanos)),
            comfy_table::Cell::new(or_dash(&problem(actual))),
        ];
        if detailed {
            row.push(comfy_table::Cell::new(or_dash(&actual.instance_guid)));
            row.push(comfy_table::Cell::new(tag(&actual.modification_tag)));
        }
        table.add_row(row);
    }
    table
}

/// `address:host_port` of the instance's first port, where it can be
/// reached without the router; `-` before it is placed.
pub fn instance_address(actual: &ActualLrp) -> String {
    match actual.ports.first() {
        _ if actual.address.is_empty() => "-".to_string(),
        Some(port) => format!("{}:{}", actual.address, port.host_port),
        None => actual.address.clone(),
    }
}

/// `8080->61001, 9090->61002`: container port to host port.
fn port_mappings(actual: &ActualLrp) -> String {
    join(
        actual
            .ports
            .iter()
            .map(|p| format!("{}->{}", p.container_port, p.host_port)),
        ", ",
    )
}

/// Why an instance is not serving: its placement error, or the reason of
/// its last crash.
fn problem(actual: &ActualLrp) -> String {
    if actual.state == ActualLrpState::Unclaimed && !actual.placement_error.is_empty() {
        format!("placement failed: {}", actual.placement_error)
    } else if !actual.crash_reason.is_empty() {
        actual.crash_reason.clone()
    } else {
        String::new()
    }
}

/// `12.3 MB / 128 MB` (MB of 2^20 bytes, as `memory_mb`); the quota left
/// out when there is none.
pub fn used_of(used_bytes: u64, quota_bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    let used = used_bytes as f64 / MB;
    if quota_bytes == 0 {
        format!("{used:.1} MB")
    } else {
        format!("{used:.1} MB / {:.0} MB", quota_bytes as f64 / MB)
    }
}

fn megabytes(mb: i64) -> String {
    if mb == 0 {
        "no limit".to_string()
    } else {
        format!("{mb} MB")
    }
}

/// The command lines of an action's `run`s, one a line.
fn command(action: &Action) -> String {
    join(
        action.run_actions().iter().map(|run| {
            std::iter::once(run.path.as_str())
                .chain(run.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        "\n",
    )
}

fn tag(tag: &lattice_models::ModificationTag) -> String {
    if tag.epoch.is_empty() {
        "-".to_string()
    } else {
        format!("{}:{}", tag.epoch, tag.index)
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>, separator: &str) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app_request, output, seed_actual, TestReceptor};

    fn args(app: &str, detailed: bool, json: bool) -> Args {
        Args {
            app: app.into(),
            rate: None,
            detailed,
            json,
        }
    }

    #[tokio::test]
    async fn shows_the_app_and_its_instances() {
        let receptor = TestReceptor::start_with(lattice_receptor::ReceptorConfig {
            router_address: Some("127.0.0.1:8080".into()),
            ..Default::default()
        })
        .await;
        let ctx = receptor.context(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 3))
            .await
            .unwrap();
        seed_actual(&receptor.store, "web", 0, ActualLrpState::Running, "cell-1").await;
        let mut crashed =
            seed_actual(&receptor.store, "web", 1, ActualLrpState::Crashed, "cell-2").await;
        crashed.crash_count = 4;
        crashed.crash_reason = "exited with status 137".into();
        receptor.store.update_actual_lrp(crashed).await.unwrap();
        let mut unplaced =
            seed_actual(&receptor.store, "web", 2, ActualLrpState::Unclaimed, "").await;
        unplaced.placement_error = "insufficient resources: memory".into();
        receptor.store.update_actual_lrp(unplaced).await.unwrap();

        let mut out = Vec::new();
        run(&args("web", false, false), &ctx, &mut out)
            .await
            .unwrap();
        let shown = output(out);
        for expected in [
            "busybox",
            "1/3 running",
            "128 MB",
            "256 MB",
            "http://web.localhost:8080",
            "MODE=test",
            "RUNNING",
            "cell-1",
            "10.0.0.5:61000",
            "8080->61000",
            "CRASHED",
            "exited with status 137",
            "placement failed: insufficient resources: memory",
        ] {
            assert!(shown.contains(expected), "{expected} missing from\n{shown}");
        }
        assert!(!shown.contains("web-0-guid"), "guids only when detailed");
        assert!(!shown.contains('\x1b'), "no colour when not asked");

        let mut out = Vec::new();
        run(&args("web", true, false), &ctx, &mut out)
            .await
            .unwrap();
        let shown = output(out);
        for expected in [
            "web-0-guid",
            "/.lattice/bin/launcher",
            "Modification tag",
            "lattice",
        ] {
            assert!(shown.contains(expected), "{expected} missing from\n{shown}");
        }

        let mut out = Vec::new();
        run(&args("web", false, true), &ctx, &mut out)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["desired_lrp"]["instances"], 3);
        assert_eq!(json["actual_lrps"].as_array().unwrap().len(), 3);
        assert_eq!(json["actual_lrps"][1]["crash_count"], 4);
        assert_eq!(json["metrics"], serde_json::json!([]), "no cell to ask");
    }

    #[tokio::test]
    async fn states_are_coloured_on_a_terminal() {
        let receptor = TestReceptor::start().await;
        let mut ctx = receptor.context(&[]);
        ctx.color = true;
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 1))
            .await
            .unwrap();
        seed_actual(&receptor.store, "web", 0, ActualLrpState::Running, "cell-1").await;
        let mut out = Vec::new();
        run(&args("web", false, false), &ctx, &mut out)
            .await
            .unwrap();
        let shown = output(out);
        // Green (SGR 32 or crossterm's 38;5;10) around RUNNING.
        assert!(shown.contains('\x1b'), "{shown}");
    }

    #[tokio::test]
    async fn an_unknown_app_is_an_error() {
        let receptor = TestReceptor::start().await;
        let err = run(
            &args("nope", false, false),
            &receptor.context(&[]),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot get app \"nope\": desired LRP \"nope\" not found"
        );
    }

    #[test]
    fn addresses_and_problems() {
        let mut actual = ActualLrp::unclaimed("web", "lattice", 0, 1);
        assert_eq!(instance_address(&actual), "-");
        actual.placement_error = "no cells".into();
        assert_eq!(problem(&actual), "placement failed: no cells");
        actual.state = ActualLrpState::Running;
        actual.address = "10.0.0.1".into();
        assert_eq!(instance_address(&actual), "10.0.0.1");
        assert_eq!(problem(&actual), "");
        actual.ports = vec![
            lattice_models::PortMapping {
                container_port: 8080,
                host_port: 61001,
            },
            lattice_models::PortMapping {
                container_port: 9090,
                host_port: 61002,
            },
        ];
        assert_eq!(instance_address(&actual), "10.0.0.1:61001");
        assert_eq!(port_mappings(&actual), "8080->61001, 9090->61002");
    }

    #[test]
    fn usage_is_shown_in_megabytes_of_its_quota() {
        assert_eq!(
            used_of(64 * 1024 * 1024, 128 * 1024 * 1024),
            "64.0 MB / 128 MB"
        );
        assert_eq!(used_of(1536 * 1024, 0), "1.5 MB");
    }
}
