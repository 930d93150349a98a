//! Cells, domains, server info and the JSON 404 for unknown paths.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header::CACHE_CONTROL, HeaderMap, StatusCode, Uri};
use axum::Json;
use lattice_models::validation::validate_domain;
use std::collections::HashMap;

use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, TaskFilter};
use lattice_models::{ActualLrpState, CellCapacity, CellResponse, DesiredLrp, TaskState};
use serde::Serialize;

use crate::error::ApiError;
use crate::AppState;

/// `GET /v1/info` (ours): what `ltc` needs to know about the cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Info {
    pub version: &'static str,
    pub domain: String,
    pub router_address: Option<String>,
}

#[utoipa::path(get, path = "/v1/info", tag = "cluster", responses((status = 200, body = Info, description = "ours: version, system domain, router address")))]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        domain: state.config.domain.clone(),
        router_address: state.config.router_address.clone(),
    })
}

/// Live cells with what the BBS places on each (claimed or running work),
/// and what their containers use (ours: `usage`, asked of each cell's rep;
/// absent for a cell that did not answer in 2 s).
#[utoipa::path(get, path = "/v1/cells", tag = "cluster", responses((status = 200, body = Vec<lattice_models::CellResponse>)))]
pub async fn cells(State(state): State<AppState>) -> Result<Json<Vec<CellResponse>>, ApiError> {
    let cells = state.store.list_cells().await?;
    let tasks = state.store.list_tasks(&TaskFilter::default()).await?;
    let actual = state
        .store
        .list_actual_lrps(&ActualLrpFilter::default())
        .await?;
    let desired: HashMap<String, DesiredLrp> = state
        .store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await?
        .into_iter()
        .map(|d| (d.process_guid.clone(), d))
        .collect();
    let mut responses: Vec<CellResponse> = cells
        .iter()
        .map(|presence| CellResponse {
            presence: presence.clone(),
            allocated: CellCapacity::default(),
            instances: 0,
            tasks: 0,
            usage: None,
        })
        .collect();
    let position: HashMap<String, usize> = responses
        .iter()
        .enumerate()
        .map(|(i, r)| (r.presence.cell_id.clone(), i))
        .collect();
    for task in tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Claimed | TaskState::Running))
    {
        if let Some(&i) = position.get(&task.cell_id) {
            let cell = &mut responses[i];
            cell.tasks += 1;
            add(&mut cell.allocated, task.memory_mb, task.disk_mb);
        }
    }
    for lrp in actual
        .iter()
        .filter(|a| matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running))
    {
        if let Some(&i) = position.get(&lrp.cell_id) {
            let cell = &mut responses[i];
            cell.instances += 1;
            let (memory, disk) = desired
                .get(&lrp.process_guid)
                .map(|d| (d.memory_mb, d.disk_mb))
                .unwrap_or_default();
            add(&mut cell.allocated, memory, disk);
        }
    }
    let mut usage = crate::usage::cell_usage(&state, &cells).await;
    for cell in &mut responses {
        cell.usage = usage.remove(&cell.presence.cell_id);
    }
    Ok(Json(responses))
}

fn add(allocated: &mut CellCapacity, memory_mb: i64, disk_mb: i64) {
    allocated.memory_mb += memory_mb;
    allocated.disk_mb += disk_mb;
    allocated.containers += 1;
}

#[utoipa::path(get, path = "/v1/domains", tag = "cluster", responses((status = 200, body = Vec<String>)))]
pub async fn domains(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.store.domains().await?))
}

/// `PUT /v1/domains/:domain`, with an optional TTL from `Cache-Control: max-age=N`.
#[utoipa::path(put, path = "/v1/domains/{domain}", tag = "cluster", params(("domain" = String, Path, description = "the domain"), ("Cache-Control" = Option<String>, Header, description = "max-age=SECONDS: the domain expires then")), responses((status = 204, description = "fresh"), (status = 400, description = "InvalidRequest: bad domain or Cache-Control", body = lattice_models::ApiErrorBody)))]
pub async fn upsert_domain(
    State(state): State<AppState>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    validate_domain("domain", &domain)?;
    let ttl = match headers.get(CACHE_CONTROL) {
        None => None,
        Some(value) => Some(parse_max_age(value.to_str().unwrap_or(""))?),
    };
    state.store.upsert_domain(&domain, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_max_age(header: &str) -> Result<Duration, ApiError> {
    header
        .split(',')
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|secs| secs.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ApiError::invalid_request(
                "Cache-Control",
                format!("Cache-Control: {header:?} holds no max-age=SECONDS"),
            )
        })
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("max-age=30").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_max_age("public, max-age=5").unwrap(),
            Duration::from_secs(5)
        );
        assert!(parse_max_age("no-cache").is_err());
        assert!(parse_max_age("max-age=-1").is_err());
    }
}
