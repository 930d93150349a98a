//! The receptor's OpenAPI 3 document, derived from the handlers' annotations
//! and the wire types of `lattice_models` themselves, so it cannot drift from
//! what the server parses and answers. Served at `/v1/openapi.json`; a copy
//! is checked in as `docs/openapi.json` and a test fails when they differ.

use axum::Json;
use utoipa::OpenApi;

use crate::{cluster, events, lrps, meta, tasks, usage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lattice receptor API",
        description = "Diego's receptor API as lattice serves it; differences are in docs/api.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        tasks::create,
        tasks::list,
        tasks::list_by_domain,
        tasks::get_one,
        tasks::delete_one,
        tasks::cancel,
        lrps::create_desired,
        lrps::list_desired,
        lrps::list_desired_by_domain,
        lrps::get_desired,
        lrps::update_desired,
        lrps::delete_desired,
        lrps::list_actual,
        lrps::list_actual_by_process_guid,
        lrps::list_actual_by_domain,
        lrps::get_actual,
        lrps::restart_actual,
        usage::actual_lrp_metrics,
        cluster::info,
        cluster::cells,
        cluster::drain,
        cluster::image_config,
        cluster::domains,
        cluster::upsert_domain,
        events::stream,
        meta::version,
        meta::sync,
        document,
    ),
    components(schemas(lattice_models::ApiErrorName, lattice_models::Action)),
    modifiers(&BasicAuth),
)]
pub struct ApiDoc;

/// Declares the optional HTTP basic auth every endpoint sits behind.
struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The document as served and checked in: pretty JSON, one trailing newline.
pub fn document_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    json.push('\n');
    json
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "cluster",
    responses((status = 200, description = "this OpenAPI 3 document"))
)]
pub async fn document() -> Json<serde_json::Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document always serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the server serves. Regenerate it with
    /// `LATTICE_UPDATE_OPENAPI=1 cargo test -p lattice-receptor openapi`.
    #[test]
    fn checked_in_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let current = document_json();
        if std::env::var_os("LATTICE_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &current).expect("docs/openapi.json is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == current,
            "docs/openapi.json is out of date; regenerate it with \
             `LATTICE_UPDATE_OPENAPI=1 cargo test -p lattice-receptor openapi`"
        );
    }

    #[test]
    fn every_route_and_wire_type_is_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/tasks",
            "/v1/tasks/{task_guid}",
            "/v1/tasks/{task_guid}/cancel",
            "/v1/desired_lrps",
            "/v1/desired_lrps/{process_guid}",
            "/v1/actual_lrps",
            "/v1/actual_lrps/{process_guid}",
            "/v1/actual_lrps/{process_guid}/index/{index}",
            "/v1/domains",
            "/v1/domains/{domain}",
            "/v1/domains/{domain}/tasks",
            "/v1/domains/{domain}/desired_lrps",
            "/v1/domains/{domain}/actual_lrps",
            "/v1/cells",
            "/v1/events",
            "/v1/info",
            "/v1/version",
            "/v1/sync/{arch}/{artifact}",
            "/v1/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for schema in [
            "TaskCreateRequest",
            "Task",
            "DesiredLrpCreateRequest",
            "DesiredLrpUpdateRequest",
            "DesiredLrp",
            "ActualLrp",
            "CellResponse",
            "Action",
            "TimeoutAction",
            "SecurityGroupRule",
            "HttpRoute",
            "TcpRoute",
            "ApiErrorBody",
            "ApiErrorName",
            "VersionResponse",
        ] {
            assert!(schemas.contains_key(schema), "{schema} has no schema");
        }
        // The timeout action is documented in Diego's form.
        assert!(schemas["TimeoutAction"]["properties"]
            .get("timeout")
            .is_some());
    }
}
