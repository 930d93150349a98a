//! The rep's HTTP interface (what the auctioneer calls, and the usage
//! samples the receptor gathers). Its client,
//! `RepClient`, lives in `lattice_client` so the auctioneer does not link
//! the cell; it is re-exported here.
//!
//! The auctioneer reaches every rep this way, in one process or across
//! machines alike, so the one-machine cluster runs the same code path as a
//! real one. Across machines it sits behind the cluster secret
//! ([`router_with_secret`]): whoever reaches it could otherwise hand the
//! cell any work.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use lattice_models::auction::{CellState, Work};
use lattice_models::ContainerMetrics;

use crate::Rep;

pub use lattice_client::{RepClient, RepClientError};

pub fn router(rep: Arc<Rep>) -> Router {
    Router::new()
        .route("/v1/state", get(state))
        .route("/v1/perform", post(perform))
        .route("/v1/containers/metrics", get(container_metrics))
        .with_state(rep)
}

/// [`router`], answering only requests that carry `secret` as
/// `Authorization: Bearer SECRET` (401 otherwise).
pub fn router_with_secret(rep: Arc<Rep>, secret: String) -> Router {
    lattice_bbs::http::require_secret(router(rep), secret)
}

async fn state(State(rep): State<Arc<Rep>>) -> Json<CellState> {
    Json(rep.state())
}

/// The latest usage sample of each of the cell's containers (the receptor
/// gathers them for `GET /v1/actual_lrps/{guid}/metrics` and `/v1/cells`).
async fn container_metrics(State(rep): State<Arc<Rep>>) -> Json<Vec<ContainerMetrics>> {
    Json(rep.container_metrics())
}

async fn perform(State(rep): State<Arc<Rep>>, Json(work): Json<Work>) -> Json<Work> {
    Json(rep.perform(work))
}
