//! The rep's HTTP interface (what the auctioneer calls, and the receptor
//! for an image's config, the usage samples and a drain). Its client,
//! `RepClient`, lives in `lattice_client` so the auctioneer does not link
//! the cell; it is re-exported here.
//!
//! The SSH proxy opens sessions (`ltc ssh`) the same way (see `session`).
//!
//! The auctioneer reaches every rep this way, in one process or across
//! machines alike, so the one-machine cluster runs the same code path as a
//! real one. Across machines it sits behind the cluster secret
//! ([`router_with_secret`]): whoever reaches it could otherwise hand the
//! cell any work.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lattice_garden::GardenError;
use lattice_models::auction::{CellState, Work};
use lattice_models::lifecycle::ImageConfig;
use lattice_models::ContainerMetrics;

use crate::Rep;

pub use lattice_client::{RepClient, RepClientError};

pub fn router(rep: Arc<Rep>) -> Router {
    Router::new()
        .route("/v1/state", get(state))
        .route("/v1/perform", post(perform))
        .route("/v1/evacuate", post(evacuate))
        .route(
            "/v1/sessions/{process_guid}/{index}",
            get(crate::session::open),
        )
        .route("/v1/image_config", get(image_config))
        .route("/v1/containers/metrics", get(container_metrics))
        .with_state(rep)
}

/// [`router`], answering only requests that carry `secret` as
/// `Authorization: Bearer SECRET` (401 otherwise).
pub fn router_with_secret(rep: Arc<Rep>, secret: String) -> Router {
    lattice_bbs::http::require_secret(router(rep), secret)
}

/// Serves `app` (the rep's [`router`], with whatever a caller wraps
/// around it) on `listener` while the rep's loops run ([`Rep::run`]),
/// until `shutdown`; returns once both have ended. How every cell serves
/// its rep, in `lattice` and in tests alike.
///
/// # Errors
/// When the listener fails.
pub async fn serve_and_run(
    rep: Arc<Rep>,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use std::future::IntoFuture as _;
    let serve_shutdown = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
        .into_future();
    let (served, ()) = tokio::join!(server, rep.run(shutdown));
    served
}

async fn state(State(rep): State<Arc<Rep>>) -> Json<CellState> {
    Json(rep.state())
}

/// Starts draining the cell (see [`Rep::evacuate`]) and answers at once:
/// the drain runs in the background.
async fn evacuate(State(rep): State<Arc<Rep>>) -> axum::http::StatusCode {
    if !rep.is_evacuating() {
        let draining = rep.clone();
        // Tracked like the cell's work: stopping the cell waits for it.
        rep.tracker.spawn(async move {
            draining.evacuate().await;
        });
    }
    axum::http::StatusCode::ACCEPTED
}

/// The latest usage sample of each of the cell's containers (the receptor
/// gathers them for `GET /v1/actual_lrps/{guid}/metrics` and `/v1/cells`).
async fn container_metrics(State(rep): State<Arc<Rep>>) -> Json<Vec<ContainerMetrics>> {
    Json(rep.container_metrics())
}

async fn perform(State(rep): State<Arc<Rep>>, Json(work): Json<Work>) -> Json<Work> {
    Json(rep.perform(work))
}

#[derive(serde::Deserialize)]
struct ImageConfigQuery {
    rootfs: String,
}

/// `GET /v1/image_config?rootfs=URL`: the image's config as the engine
/// has it (pulled first when absent), for the receptor's endpoint of the
/// same name: reading it costs one engine call instead of a staging
/// container. A rootfs that is no image URL is 400, an image that cannot
/// be had 404, the engine failing 502; the body says why.
async fn image_config(
    State(rep): State<Arc<Rep>>,
    Query(query): Query<ImageConfigQuery>,
) -> Result<Json<ImageConfig>, (StatusCode, String)> {
    rep.executor
        .garden()
        .image_config(&query.rootfs)
        .await
        .map(Json)
        .map_err(|err| {
            let status = match err {
                GardenError::InvalidSpec(_) => StatusCode::BAD_REQUEST,
                GardenError::ImageUnavailable { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, err.to_string())
        })
}
