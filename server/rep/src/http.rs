//! The rep's HTTP interface (what the auctioneer calls) and its client.
//!
//! The auctioneer reaches every rep this way, in one process or across
//! machines alike, so the one-machine cluster runs the same code path as a
//! real one. Across machines it sits behind the cluster secret
//! ([`router_with_secret`]): whoever reaches it could otherwise hand the
//! cell any work.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use lattice_models::auction::{CellState, Work};

use crate::Rep;

pub fn router(rep: Arc<Rep>) -> Router {
    Router::new()
        .route("/v1/state", get(state))
        .route("/v1/perform", post(perform))
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

async fn perform(State(rep): State<Arc<Rep>>, Json(work): Json<Work>) -> Json<Work> {
    Json(rep.perform(work))
}

#[derive(Debug, thiserror::Error)]
pub enum RepClientError {
    #[error("rep at {address} failed: {source}")]
    Http {
        address: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Talks to reps.
#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
    /// Presented to every rep (see [`router_with_secret`]).
    secret: Option<String>,
}

impl Default for RepClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RepClient {
    pub fn new() -> RepClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        RepClient { http, secret: None }
    }

    /// A client that presents `secret` to reps that require it.
    pub fn with_secret(secret: String) -> RepClient {
        RepClient {
            secret: Some(secret),
            ..RepClient::new()
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
    }

    pub async fn state(&self, address: &str) -> Result<CellState, RepClientError> {
        let wrap = |source| RepClientError::Http {
            address: address.to_string(),
            source,
        };
        self.authorize(self.http.get(format!("{address}/v1/state")))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(wrap)?
            .json()
            .await
            .map_err(wrap)
    }

    /// Sends work; returns what the rep could not take.
    pub async fn perform(&self, address: &str, work: &Work) -> Result<Work, RepClientError> {
        let wrap = |source| RepClientError::Http {
            address: address.to_string(),
            source,
        };
        self.authorize(self.http.post(format!("{address}/v1/perform")))
            .json(work)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(wrap)?
            .json()
            .await
            .map_err(wrap)
    }
}
