//! [`RepClient`]: the rep's auction API (`/v1/state`, `/v1/perform`), for
//! the auctioneer, in one process or across machines alike; and its usage
//! samples (`/v1/containers/metrics`), for the receptor.

use std::time::Duration;

use lattice_models::auction::{CellState, Work};
use lattice_models::ContainerMetrics;

/// What a call to a rep can fail with. Not a [`crate::ClientError`]: that
/// one speaks of the receptor (and tells the user how to start it), and a
/// rep's failure is the auctioneer's to handle, never shown to a user.
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
    /// Presented to every rep (the rep's `router_with_secret`).
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

    /// The latest usage sample of each container of the cell.
    pub async fn container_metrics(
        &self,
        address: &str,
    ) -> Result<Vec<ContainerMetrics>, RepClientError> {
        let wrap = |source| RepClientError::Http {
            address: address.to_string(),
            source,
        };
        self.authorize(self.http.get(format!("{address}/v1/containers/metrics")))
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
