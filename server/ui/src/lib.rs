//! The web dashboard: a page at `/ui` that shows the cluster live.
//!
//! The assets (one HTML page, one stylesheet, one script, all hand-written
//! and kept small) live in `assets/` and are compiled into the binary, so
//! serving the dashboard needs no build step, no internet and no files next
//! to the binary. The page holds no data: the browser reads everything from
//! the receptor's API on the same origin (`/v1/cells`, `/v1/desired_lrps`,
//! `/v1/actual_lrps`, `/v1/tasks`), follows `/v1/events` and the log hub's
//! `/v1/logs/{log_guid}?follow=true` as Server-Sent Events, and writes
//! through the same API (scale, remove, cancel, delete).
//!
//! It must never serve anything but these assets, and never load anything
//! from another origin: the Content-Security-Policy header forbids it, so a
//! page that depended on a CDN or an external font would visibly break.
//!
//! # Layout
//! - [`router`]: the routes, merged beside the receptor's API by `lattice up`
//!   and `lattice brain`, behind the API's basic auth (browsers ask for the
//!   credentials themselves, since a 401 carries `WWW-Authenticate`).
//! - `assets/index.html`, `assets/style.css`, `assets/app.js`: the page.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Where the dashboard is served.
pub const PATH: &str = "/ui";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../assets/index.html"),
};

/// The files the page loads, by the name after `/ui/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
];

/// Same origin only: the page talks to the API it came from and nothing
/// else (no CDN, no external font, no inline script).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard's routes: the page at `/ui` (the page is at `/ui` rather
/// than `/ui/` so that the browser's cached basic-auth credentials cover
/// the whole origin, `/v1/...` included), its assets at `/ui/{name}`.
pub fn router() -> Router {
    Router::new()
        .route(PATH, get(|| async { serve(&INDEX) }))
        .route("/ui/", get(|| async { Redirect::permanent(PATH) }))
        .route("/ui/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no such dashboard file: {name}\n"),
        )
            .into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidated each time: a new binary must never run with an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        for (path, content_type) in [
            ("/ui", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/style.css", "text/css; charset=utf-8"),
        ] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert!(
                headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'none'"),
                "{path}"
            );
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn the_page_loads_exactly_the_embedded_assets() {
        let (_, _, page) = get("/ui").await;
        for asset in ASSETS {
            assert!(
                page.contains(&format!("/ui/{}", asset.name)),
                "index.html does not load {}",
                asset.name
            );
        }
    }

    #[tokio::test]
    async fn a_trailing_slash_redirects_to_the_page() {
        let (status, headers, _) = get("/ui/").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/ui");
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_404_naming_it() {
        let (status, _, body) = get("/ui/missing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("missing.js"), "{body}");
    }

    /// Nothing may come from another origin (the CSP would block it and the
    /// dashboard must work offline). The script builds its own URLs from
    /// `location.origin`; `http://` appears there only in app route links.
    #[test]
    fn no_asset_refers_to_another_origin() {
        for asset in [&INDEX, &ASSETS[1]] {
            assert!(!asset.body.contains("://"), "{} names a URL", asset.name);
            assert!(!asset.body.contains("@import"), "{} imports", asset.name);
        }
        let script = ASSETS[0].body;
        for needle in ["https://", "//cdn", "fonts.", "import("] {
            assert!(!script.contains(needle), "app.js refers to {needle}");
        }
    }
}
