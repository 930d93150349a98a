//! Request extractors that answer bad input with our JSON errors (axum's own
//! rejections are plain text and do not name the field).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use lattice_models::parse::from_json_slice;
use lattice_models::ApiErrorName;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// A JSON body of at most `ReceptorConfig::max_body_bytes`, parsed with the
/// offending field named on error.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let body: Body = req.into_body();
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|err| {
            // to_bytes fails either on the limit or on a broken connection;
            // only the first is the client's to fix with a smaller body.
            let too_large = std::error::Error::source(&err)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || err.to_string().contains("length limit");
            if too_large {
                ApiError::new(
                    ApiErrorName::RequestEntityTooLarge,
                    format!("request body is larger than the limit of {limit} bytes"),
                )
            } else {
                ApiError::new(
                    ApiErrorName::InvalidJson,
                    format!("could not read request body: {err}"),
                )
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                ApiErrorName::InvalidJson,
                "request body is empty; expected JSON",
            ));
        }
        Ok(JsonBody(from_json_slice(&bytes)?))
    }
}

/// Parses an instance index from a path segment.
pub fn parse_index(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|i| *i >= 0).ok_or_else(|| {
        ApiError::invalid_request(
            "index",
            format!("index {raw:?} is not a non-negative integer"),
        )
    })
}
