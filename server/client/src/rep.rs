//! [`RepClient`]: the rep's API (`/v1/state`, `/v1/perform` for the
//! auctioneer; `/v1/evacuate`, `/v1/image_config` and the usage samples
//! `/v1/containers/metrics` for the receptor), in one process or across
//! machines alike; and its sessions (`ltc ssh`, in `session`), for the SSH
//! proxy.

use std::time::Duration;

use lattice_models::auction::{CellState, Work};
use lattice_models::lifecycle::ImageConfig;
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
    /// A session (`ltc ssh`) could not be opened; `message` has the rep's
    /// own words when it answered.
    #[error("rep at {address} refused the session: {message}")]
    Session { address: String, message: String },
    /// The rep answered, refusing: `message` is its reason (e.g. an image
    /// it cannot pull, status 404).
    #[error("rep at {address} refused ({status}): {message}")]
    Refused {
        address: String,
        status: u16,
        message: String,
    },
}

/// Talks to reps.
#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
    /// For sessions: no overall timeout, as a session lasts as long as its
    /// user wants.
    sessions: reqwest::Client,
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
        let sessions = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        RepClient {
            http,
            sessions,
            secret: None,
        }
    }

    /// A client that presents `secret` to reps that require it.
    pub fn with_secret(secret: String) -> RepClient {
        RepClient {
            secret: Some(secret),
            ..RepClient::new()
        }
    }

    pub(crate) fn session_http(&self) -> &reqwest::Client {
        &self.sessions
    }

    pub(crate) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
    }

    /// Sends `request` to the rep at `address` with the secret; an error
    /// status is an error.
    async fn call(
        &self,
        address: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RepClientError> {
        self.authorize(request)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|source| http_error(address, source))
    }

    /// [`RepClient::call`], decoding the JSON answer.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        address: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RepClientError> {
        self.call(address, request)
            .await?
            .json()
            .await
            .map_err(|source| http_error(address, source))
    }

    pub async fn state(&self, address: &str) -> Result<CellState, RepClientError> {
        self.call_json(address, self.http.get(format!("{address}/v1/state")))
            .await
    }

    /// Tells the rep to drain its cell (evacuation); it answers at once and
    /// drains in the background.
    pub async fn evacuate(&self, address: &str) -> Result<(), RepClientError> {
        self.call(address, self.http.post(format!("{address}/v1/evacuate")))
            .await?;
        Ok(())
    }

    /// The latest usage sample of each container of the cell.
    pub async fn container_metrics(
        &self,
        address: &str,
    ) -> Result<Vec<ContainerMetrics>, RepClientError> {
        self.call_json(
            address,
            self.http.get(format!("{address}/v1/containers/metrics")),
        )
        .await
    }

    /// Sends work; returns what the rep could not take.
    pub async fn perform(&self, address: &str, work: &Work) -> Result<Work, RepClientError> {
        self.call_json(
            address,
            self.http.post(format!("{address}/v1/perform")).json(work),
        )
        .await
    }

    /// The config of the image of `rootfs`, as the rep's engine has it.
    ///
    /// # Errors
    /// [`RepClientError::Refused`] with the rep's reason when it cannot
    /// read it (400: not an image URL; 404: the image cannot be had);
    /// [`RepClientError::Http`] when the rep cannot be reached.
    pub async fn image_config(
        &self,
        address: &str,
        rootfs: &str,
    ) -> Result<ImageConfig, RepClientError> {
        let wrap = |source| http_error(address, source);
        let response = self
            .authorize(self.http.get(format!("{address}/v1/image_config")))
            .query(&[("rootfs", rootfs)])
            // Pulling a missing image can take long; reading one, never.
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(wrap)?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(RepClientError::Refused {
                address: address.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        response.json().await.map_err(wrap)
    }
}

fn http_error(address: &str, source: reqwest::Error) -> RepClientError {
    RepClientError::Http {
        address: address.to_string(),
        source,
    }
}
