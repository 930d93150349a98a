//! `ltc update-routes APP PORT:HOST[,PORT:HOST...]`: Lattice's older way to
//! set an app's HTTP routes (`ltc update -R` is the newer one).

use std::io::Write;

use anyhow::Context as _;
use lattice_models::DesiredLrpUpdateRequest;

use crate::commands::update::write_routes;
use crate::routes::{group_http_routes, parse_route_spec, qualify};
use crate::Context;

/// `PORT:HOST[,PORT:HOST...]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec(pub Vec<(u32, String)>);

fn parse_spec(value: &str) -> Result<RouteSpec, String> {
    parse_route_spec(value).map(RouteSpec)
}

pub const EXAMPLES: &str = "\
Examples:
  ltc update-routes hello 8080:hello,8080:www.example.com
  ltc update-routes hello --no-routes";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name.
    pub app: String,

    /// The HTTP routes, PORT:HOST[,PORT:HOST...], e.g.
    /// `8080:web,9090:admin.example.com`; a HOST without a dot gets the
    /// system domain appended. Replaces the app's HTTP routes (its TCP
    /// routes stay).
    #[arg(value_name = "PORT:HOST[,PORT:HOST...]",
          value_parser = parse_spec,
          required_unless_present = "no_routes", conflicts_with = "no_routes")]
    pub routes: Option<RouteSpec>,

    /// Remove the app's HTTP routes.
    #[arg(long)]
    pub no_routes: bool,
}

/// Reads the app and sends its new routes conditional on its modification
/// tag, so that a concurrent change is refused (409), not overwritten.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let app = &args.app;
    let client = ctx.client()?;
    let lrp = client
        .desired_lrp(app)
        .await
        .with_context(|| format!("cannot update the routes of {app}"))?;
    let info = client
        .info()
        .await
        .context("cannot read the cluster's domain")?;
    let mut routes = lrp.routes.clone();
    routes.http = match &args.routes {
        Some(RouteSpec(pairs)) if !args.no_routes => group_http_routes(
            pairs
                .iter()
                .map(|(port, host)| (*port, qualify(host, &info.domain))),
        ),
        _ => Vec::new(),
    };
    let update = DesiredLrpUpdateRequest {
        routes: Some(routes.clone()),
        modification_tag: Some(lrp.modification_tag),
        ..Default::default()
    };
    client
        .update_desired_lrp(app, &update)
        .await
        .with_context(|| format!("cannot update the routes of {app}"))?;
    writeln!(out, "Updated the routes of {app}")?;
    write_routes(out, &routes, info.router_address.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use lattice_models::HttpRoute;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::testing::{app_request, output, TestReceptor};

    fn args(argv: &[&str]) -> Result<Args, clap::Error> {
        let argv = ["ltc", "update-routes"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::UpdateRoutes(args) => Ok(args),
            other => panic!("not update-routes: {other:?}"),
        }
    }

    #[tokio::test]
    async fn sets_and_clears_http_routes() {
        let receptor = TestReceptor::start_with(lattice_receptor::ReceptorConfig {
            router_address: Some("127.0.0.1:80".into()),
            ..Default::default()
        })
        .await;
        let ctx = receptor.context(&[]);
        ctx.client()
            .unwrap()
            .create_desired_lrp(&app_request("web", 1))
            .await
            .unwrap();

        let mut out = Vec::new();
        let spec = args(&["web", "8080:web,9090:admin.example.com,8080:www"]).unwrap();
        run(&spec, &ctx, &mut out).await.unwrap();
        assert_eq!(
            output(out),
            "Updated the routes of web\n  routes:\n    http://web.localhost\n    \
             http://www.localhost\n    http://admin.example.com\n"
        );
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(
            lrp.routes.http,
            [
                HttpRoute {
                    hostnames: vec!["web.localhost".into(), "www.localhost".into()],
                    port: 8080
                },
                HttpRoute {
                    hostnames: vec!["admin.example.com".into()],
                    port: 9090
                },
            ]
        );

        let mut out = Vec::new();
        run(&args(&["web", "--no-routes"]).unwrap(), &ctx, &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "Updated the routes of web\n  routes: none\n");
        assert!(receptor
            .store
            .get_desired_lrp("web")
            .await
            .unwrap()
            .routes
            .is_empty());
    }

    #[test]
    fn the_spec_is_checked_by_clap() {
        for argv in [
            &["web"][..],
            &["web", "web:8080"],
            &["web", "8080:web", "--no-routes"],
        ] {
            let err = args(argv).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE), "{argv:?}");
        }
    }
}
