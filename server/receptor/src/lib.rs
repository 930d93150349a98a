//! The receptor: the cluster's public REST API (Diego's receptor API).
//!
//! It validates every request and is the only writer of desired state (tasks
//! and desired LRPs); it also answers reads of actual state and serves the
//! change feed as Server-Sent Events. It must never store anything from a
//! rejected request, and never leak internal errors to clients (see
//! [`error`]).
//!
//! # Layout
//! - [`app`] builds the router; [`serve`] runs it on a bound listener until
//!   a shutdown token fires.
//! - `tasks`, `lrps`, `cluster` (cells, domains, info), `events`, `meta`
//!   (version, ltc sync), `usage` (containers' usage, from the cells):
//!   handlers.
//! - [`error`]: the error policy; `extract`: body and path parsing.
//! - [`openapi`]: the OpenAPI 3 document, derived from the handlers and the
//!   wire types (`/v1/openapi.json`, `docs/openapi.json`).
//! - `auth`: optional HTTP basic auth.

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use lattice_bbs::SharedStore;
use lattice_client::RepClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod auth;
mod cluster;
pub mod error;
mod events;
mod extract;
mod lrps;
mod meta;
pub mod openapi;
mod tasks;
mod usage;

pub use auth::require_basic_auth;
pub use error::ApiError;

/// Default request body limit: large enough for any recipe, small enough that
/// a runaway client cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The HTTP basic-auth credentials a receptor asks for: the client's type,
/// so that the server and every client agree on one (with a `Debug` that
/// never shows the password).
pub use lattice_client::Credentials;

#[derive(Debug, Clone)]
pub struct ReceptorConfig {
    /// When set, every request must carry these as HTTP basic auth.
    pub credentials: Option<Credentials>,
    pub max_body_bytes: usize,
    /// The system domain apps are routed under (`APP.DOMAIN`).
    pub domain: String,
    /// Where the router listens, when this cluster has one (`host:port`).
    pub router_address: Option<String>,
    /// Whether work may ask for `privileged: true` (a container with every
    /// capability of the host's root). Off unless the operator opts in.
    pub allow_privileged: bool,
    /// The `ltc` binary served on `/v1/sync/{arch}/ltc` (see
    /// [`ltc_beside_current_exe`]); read on each request, so an install made
    /// after the server started is served.
    pub ltc_path: Option<std::path::PathBuf>,
    /// The SSH proxy (`ltc ssh`), when this server runs one: told to
    /// clients in `/v1/info`.
    pub ssh: Option<SshInfo>,
    /// The secret cells' reps require (as the auctioneer presents it), for
    /// what the receptor asks of cells: an image's config, the containers'
    /// usage samples, a drain. `None`: reps that require none.
    pub rep_secret: Option<String>,
}

/// Where the SSH proxy listens and the host key it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshInfo {
    pub port: u16,
    /// `SHA256:...`, as OpenSSH shows it.
    pub host_key_fingerprint: String,
}

/// Where the installer puts `ltc`: beside the running server binary.
pub fn ltc_beside_current_exe() -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("ltc"))
}

impl Default for ReceptorConfig {
    fn default() -> Self {
        Self {
            credentials: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            domain: "localhost".to_string(),
            router_address: None,
            allow_privileged: false,
            ltc_path: None,
            ssh: None,
            rep_secret: None,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub config: Arc<ReceptorConfig>,
    /// Fires on server shutdown; ends event streams so shutdown is not held
    /// up by clients that never disconnect.
    pub shutdown: CancellationToken,
    /// Reaches cells' reps (an image's config, usage samples), with the rep
    /// secret.
    pub reps: RepClient,
}

/// The receptor's router, ready to serve.
pub fn app(store: SharedStore, config: ReceptorConfig, shutdown: CancellationToken) -> Router {
    app_with_routes(store, config, shutdown, Router::new())
}

/// The receptor's router with `extra` routes served beside the API, behind
/// the same authentication (e.g. the log hub's `/v1/logs`).
pub fn app_with_routes(
    store: SharedStore,
    config: ReceptorConfig,
    shutdown: CancellationToken,
    extra: Router,
) -> Router {
    let reps = match &config.rep_secret {
        Some(secret) => RepClient::with_secret(secret.clone()),
        None => RepClient::new(),
    };
    let state = AppState {
        store,
        config: Arc::new(config),
        shutdown,
        reps,
    };
    let api = Router::new()
        .route("/v1/info", get(cluster::info))
        .route("/v1/version", get(meta::version))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/sync/{arch}/{artifact}", get(meta::sync))
        .route("/v1/tasks", post(tasks::create).get(tasks::list))
        .route(
            "/v1/tasks/{task_guid}",
            get(tasks::get_one).delete(tasks::delete_one),
        )
        .route("/v1/tasks/{task_guid}/cancel", post(tasks::cancel))
        .route("/v1/domains/{domain}/tasks", get(tasks::list_by_domain))
        .route(
            "/v1/desired_lrps",
            post(lrps::create_desired).get(lrps::list_desired),
        )
        .route(
            "/v1/desired_lrps/{process_guid}",
            get(lrps::get_desired)
                .put(lrps::update_desired)
                .delete(lrps::delete_desired),
        )
        .route(
            "/v1/domains/{domain}/desired_lrps",
            get(lrps::list_desired_by_domain),
        )
        .route("/v1/actual_lrps", get(lrps::list_actual))
        .route(
            "/v1/actual_lrps/{process_guid}",
            get(lrps::list_actual_by_process_guid),
        )
        .route(
            "/v1/actual_lrps/{process_guid}/metrics",
            get(usage::actual_lrp_metrics),
        )
        .route(
            "/v1/actual_lrps/{process_guid}/index/{index}",
            get(lrps::get_actual).delete(lrps::restart_actual),
        )
        .route(
            "/v1/domains/{domain}/actual_lrps",
            get(lrps::list_actual_by_domain),
        )
        .route("/v1/cells", get(cluster::cells))
        .route("/v1/cells/{cell_id}/drain", post(cluster::drain))
        .route("/v1/image_config", get(cluster::image_config))
        .route("/v1/domains", get(cluster::domains))
        .route("/v1/domains/{domain}", put(cluster::upsert_domain))
        .route("/v1/events", get(events::stream))
        .fallback(cluster::not_found)
        .with_state(state.clone());
    api.merge(extra)
        .layer(axum::middleware::from_fn_with_state(state, auth::require))
        .layer(axum::middleware::from_fn(log_request))
}

/// Serves `app` on `listener` until `shutdown` fires, then drains open
/// requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Wall-clock time in Diego's unit (nanoseconds since the epoch).
pub(crate) fn now_nanos() -> i64 {
    lattice_models::unix_nanos(std::time::SystemTime::now())
}

/// Refuses privileged work unless the server was started with
/// `--allow-privileged`: a privileged container is root on the host, which
/// no API credential (or the lack of one) should hand out by default.
pub(crate) fn check_privileged(
    config: &ReceptorConfig,
    privileged: bool,
) -> Result<(), lattice_models::ValidationError> {
    if privileged && !config.allow_privileged {
        return Err(lattice_models::ValidationError::new(
            "privileged",
            "privileged containers are refused: this server was not started with --allow-privileged",
        ));
    }
    Ok(())
}
