//! `ltc update APP`: change an app's instance count or routes in place
//! (without waiting; `ltc scale` waits for a new count).

use std::io::Write;

use anyhow::Context as _;
use clap::ArgGroup;
use lattice_client::Client;
use lattice_models::lrp::MAX_INSTANCES;
use lattice_models::{DesiredLrp, DesiredLrpUpdateRequest, Routes};

use crate::commands::create::DEFAULT_PORT;
use crate::routes::{
    http_routes, http_urls, parse_http_route, parse_tcp_route, tcp_lines, tcp_routes,
    HttpRouteFlag, TcpRouteFlag,
};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc update hello -i 4
  # Replace the HTTP routes: hello.DOMAIN and www.example.com on port 8080
  ltc update hello -R hello -R www.example.com:8080
  # The router's port 61000 to the container's 5432
  ltc update db -T 61000:5432
  ltc update hello --no-routes";

#[derive(Debug, clap::Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["instances", "http_routes", "tcp_routes", "no_routes"])
))]
pub struct Args {
    /// The app's name.
    pub app: String,

    /// The number of instances.
    #[arg(short = 'i', long,
          value_parser = clap::value_parser!(i64).range(0..=MAX_INSTANCES))]
    pub instances: Option<i64>,

    /// An HTTP route, HOST[:PORT] (a HOST without a dot gets the system
    /// domain appended; PORT defaults to the app's first port).
    /// Repeatable; replaces the app's HTTP routes, keeps its TCP routes.
    #[arg(short = 'R', long = "http-route", value_name = "HOST[:PORT]",
          value_parser = parse_http_route, conflicts_with = "no_routes")]
    pub http_routes: Vec<HttpRouteFlag>,

    /// A TCP route, EXTERNAL[:CONTAINER] (CONTAINER defaults to the app's
    /// first port). Repeatable; replaces the app's TCP routes, keeps its
    /// HTTP routes.
    #[arg(short = 'T', long = "tcp-route", value_name = "EXTERNAL[:CONTAINER]",
          value_parser = parse_tcp_route, conflicts_with = "no_routes")]
    pub tcp_routes: Vec<TcpRouteFlag>,

    /// Remove every route of the app.
    #[arg(long)]
    pub no_routes: bool,
}

/// Reads the app, applies the flags to what it read and sends the update
/// conditional on the app's modification tag, so that a concurrent change
/// is refused (409) instead of silently overwritten.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let app = &args.app;
    let client = ctx.client()?;
    let lrp = client
        .desired_lrp(app)
        .await
        .with_context(|| format!("cannot update {app}"))?;
    let routes = new_routes(args, &client, &lrp).await?;
    let update = DesiredLrpUpdateRequest {
        instances: args.instances,
        routes: routes.clone(),
        annotation: None,
        modification_tag: Some(lrp.modification_tag.clone()),
    };
    client
        .update_desired_lrp(app, &update)
        .await
        .with_context(|| format!("cannot update {app}"))?;
    writeln!(out, "Updated {app}")?;
    if let Some(instances) = args.instances {
        writeln!(out, "  instances: {} -> {instances}", lrp.instances)?;
    }
    if let Some(routes) = routes {
        let info = client.info().await.ok();
        write_routes(out, &routes, info.and_then(|i| i.router_address).as_deref())?;
    }
    Ok(())
}

/// The routes to send, or `None` to leave them as they are.
async fn new_routes(
    args: &Args,
    client: &Client,
    lrp: &DesiredLrp,
) -> anyhow::Result<Option<Routes>> {
    if args.no_routes {
        return Ok(Some(Routes::default()));
    }
    if args.http_routes.is_empty() && args.tcp_routes.is_empty() {
        return Ok(None);
    }
    let first_port = lrp.ports.first().copied().unwrap_or(DEFAULT_PORT);
    let mut routes = lrp.routes.clone();
    if !args.http_routes.is_empty() {
        let info = client
            .info()
            .await
            .context("cannot read the cluster's domain")?;
        routes.http = http_routes(&args.http_routes, &info.domain, first_port);
    }
    if !args.tcp_routes.is_empty() {
        routes.tcp = tcp_routes(&args.tcp_routes, first_port);
    }
    Ok(Some(routes))
}

/// `  routes: none`, or one line per route.
pub fn write_routes(
    out: &mut dyn Write,
    routes: &Routes,
    router_address: Option<&str>,
) -> std::io::Result<()> {
    if routes.is_empty() {
        return writeln!(out, "  routes: none");
    }
    writeln!(out, "  routes:")?;
    for line in http_urls(routes, router_address)
        .into_iter()
        .chain(tcp_lines(routes))
    {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use lattice_models::{HttpRoute, TcpRoute};

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::testing::{app_request, output, TestReceptor};

    fn args(argv: &[&str]) -> Result<Args, clap::Error> {
        let argv = ["ltc", "update"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Update(args) => Ok(args),
            other => panic!("not an update: {other:?}"),
        }
    }

    #[tokio::test]
    async fn updates_instances_and_routes() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let mut request = app_request("web", 1);
        request.routes.as_mut().unwrap().tcp = vec![TcpRoute {
            external_port: 61000,
            container_port: 22,
            router_group_guid: None,
        }];
        ctx.client()
            .unwrap()
            .create_desired_lrp(&request)
            .await
            .unwrap();

        let mut out = Vec::new();
        let update = args(&["web", "-i", "4", "-R", "www", "-R", "api.example.com:9090"]).unwrap();
        run(&update, &ctx, &mut out).await.unwrap();
        assert_eq!(
            output(out),
            "Updated web\n  instances: 1 -> 4\n  routes:\n    http://www.localhost\n    \
             http://api.example.com\n    tcp 61000 -> 22\n"
        );
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(lrp.instances, 4);
        assert_eq!(
            lrp.routes.http,
            [
                HttpRoute {
                    hostnames: vec!["www.localhost".into()],
                    port: 8080
                },
                HttpRoute {
                    hostnames: vec!["api.example.com".into()],
                    port: 9090
                }
            ]
        );
        assert_eq!(lrp.routes.tcp.len(), 1, "-R keeps the TCP routes");

        let update = args(&["web", "-T", "62000"]).unwrap();
        run(&update, &ctx, &mut Vec::new()).await.unwrap();
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(
            lrp.routes.tcp,
            [TcpRoute {
                external_port: 62000,
                container_port: 8080,
                router_group_guid: None,
            }]
        );
        assert_eq!(lrp.routes.http.len(), 2, "-T keeps the HTTP routes");

        let mut out = Vec::new();
        run(&args(&["web", "--no-routes"]).unwrap(), &ctx, &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "Updated web\n  routes: none\n");
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert!(lrp.routes.is_empty());
        assert_eq!(lrp.instances, 4, "untouched");
    }

    #[tokio::test]
    async fn an_unknown_app_is_an_error() {
        let receptor = TestReceptor::start().await;
        let err = run(
            &args(&["nope", "-i", "1"]).unwrap(),
            &receptor.context(&[]),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot update nope: desired LRP \"nope\" not found"
        );
    }

    #[test]
    fn something_must_change() {
        let err = args(&["web"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE));
        let err = args(&["web", "--no-routes", "-R", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE));
    }
}
