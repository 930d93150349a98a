//! Optional HTTP basic auth: off unless the server was given credentials.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use lattice_models::ApiErrorName;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::{AppState, Credentials};

pub async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.config.credentials else {
        return next.run(req).await;
    };
    match check(expected, &req) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// `router` behind the same basic auth as the API's, when `credentials`
/// are given (e.g. a router's `/metrics`, whose process serves no API).
pub fn require_basic_auth(router: axum::Router, credentials: Option<Credentials>) -> axum::Router {
    let Some(expected) = credentials else {
        return router;
    };
    let expected = std::sync::Arc::new(expected);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let expected = expected.clone();
            async move {
                match check(&expected, &req) {
                    Ok(()) => next.run(req).await,
                    Err(refused) => refused,
                }
            }
        },
    ))
}

/// Whether `req` carries `expected` as basic auth; the 401 answer if not.
#[allow(clippy::result_large_err)]
fn check(expected: &Credentials, req: &Request) -> Result<(), Response> {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let wanted = format!("{}:{}", expected.username, expected.password);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), wanted.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(ApiErrorName::Unauthorized, "wrong username or password").into_response()),
        None => Err(ApiError::new(
            ApiErrorName::Unauthorized,
            "this receptor requires HTTP basic auth; set credentials with `ltc target URL --username U --password P`",
        )
        .into_response()),
    }
}

/// The credentials of a `Basic` authorization header. RFC 7617 (via RFC
/// 7235) makes the scheme name case-insensitive: `basic` and `BASIC` count.
fn basic_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then_some(credentials.trim())
}

/// Compares without an early exit, so response time does not reveal how much
/// of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;

    #[test]
    fn regression_basic_scheme_is_case_insensitive() {
        for header in ["Basic dTpw", "basic dTpw", "BASIC dTpw", "bAsIc  dTpw"] {
            assert_eq!(basic_credentials(header), Some("dTpw"), "{header}");
        }
        assert_eq!(basic_credentials("Bearer dTpw"), None);
        assert_eq!(basic_credentials("Basicx dTpw"), None);
        assert_eq!(basic_credentials("Basic"), None);
    }
}
