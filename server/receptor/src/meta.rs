//! `/v1/version` and `/v1/sync/{arch}/{artifact}`: what Lattice's `ltc`
//! asks a cluster about itself (`ltc version`, `ltc target`, `ltc sync`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lattice_models::api::{sync_arch, SYNC_ARCHES};
use lattice_models::{ApiErrorName, VersionResponse};
use tokio_util::io::ReaderStream;

use crate::error::ApiError;
use crate::AppState;

/// The only artifact a cluster serves for syncing.
pub const LTC_ARTIFACT: &str = "ltc";

/// `GET /v1/version`. `ltc` is named only when this server can hand it out.
#[utoipa::path(get, path = "/v1/version", tag = "cluster", responses((status = 200, body = lattice_models::VersionResponse)))]
pub async fn version(State(state): State<AppState>) -> Json<VersionResponse> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let ltc_served = match &state.config.ltc_path {
        Some(path) => tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file()),
        None => false,
    };
    Json(VersionResponse {
        receptor: Some(version.clone()),
        lattice_release: Some(version.clone()),
        // The installer puts ltc and lattice, built together, side by side.
        ltc: ltc_served.then_some(version),
        ..Default::default()
    })
}

/// `GET /v1/sync/{arch}/ltc`: the `ltc` binary installed beside this server,
/// for the machine kind it was built for. Anything else is a 404 that says
/// what this cluster does have.
#[utoipa::path(get, path = "/v1/sync/{arch}/{artifact}", tag = "cluster", params(("arch" = String, Path, description = "linux or osx"), ("artifact" = String, Path, description = "ltc")), responses((status = 200, content_type = "application/octet-stream", description = "the ltc binary"), (status = 404, description = "ResourceNotFound: no ltc for that architecture here", body = lattice_models::ApiErrorBody)))]
pub async fn sync(
    State(state): State<AppState>,
    Path((arch, artifact)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if artifact != LTC_ARTIFACT {
        return Err(ApiError::not_found(format!(
            "no artifact {artifact:?} to sync; this cluster serves only \"ltc\""
        )));
    }
    if !SYNC_ARCHES.contains(&arch.as_str()) {
        return Err(ApiError::not_found(format!(
            "unknown architecture {arch:?}; expected one of {}",
            SYNC_ARCHES.join(", ")
        )));
    }
    let Some(path) = &state.config.ltc_path else {
        return Err(ApiError::not_found(
            "this server was started without an ltc to serve",
        ));
    };
    let served = sync_arch().unwrap_or("none");
    if arch != served {
        return Err(ApiError::not_found(format!(
            "this cluster has no ltc for {arch}; it serves ltc for {served} only"
        )));
    }
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "no ltc is installed beside the server (looked for {}); install lattice with installers/install.sh",
                path.display()
            )))
        }
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot open ltc for sync");
            return Err(ApiError::new(
                ApiErrorName::UnknownError,
                "the server cannot read its ltc; see the server log",
            ));
        }
    };
    let length = file
        .metadata()
        .await
        .map_err(|err| {
            tracing::error!(path = %path.display(), error = %err, "cannot stat ltc for sync");
            ApiError::new(
                ApiErrorName::UnknownError,
                "the server cannot read its ltc; see the server log",
            )
        })?
        .len();
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}
