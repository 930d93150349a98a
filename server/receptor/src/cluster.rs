//! Cells, domains, server info and the JSON 404 for unknown paths.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header::CACHE_CONTROL, HeaderMap, StatusCode, Uri};
use axum::Json;
use lattice_models::validation::validate_domain;
use std::collections::HashMap;

use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, TaskFilter};
use lattice_client::RepClientError;
use lattice_models::lifecycle::ImageConfig;
use lattice_models::{
    ActualLrpState, ApiErrorName, CellCapacity, CellResponse, DesiredLrp, TaskState,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// `GET /v1/info` (ours): what `ltc` needs to know about the cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Info {
    pub version: &'static str,
    pub domain: String,
    pub router_address: Option<String>,
    /// The port of the SSH proxy (`ltc ssh`) on this server's host, when
    /// it runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The SSH proxy's host key fingerprint (`SHA256:...`), to check a
    /// first connection against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_host_key_fingerprint: Option<String>,
}

#[utoipa::path(get, path = "/v1/info", tag = "cluster", responses((status = 200, body = Info, description = "ours: version, system domain, router address, SSH proxy")))]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    let ssh = state.config.ssh.as_ref();
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        domain: state.config.domain.clone(),
        router_address: state.config.router_address.clone(),
        ssh_port: ssh.map(|ssh| ssh.port),
        ssh_host_key_fingerprint: ssh.map(|ssh| ssh.host_key_fingerprint.clone()),
    })
}

/// `POST /v1/cells/{cell_id}/drain` (ours): the cell drains (Diego's
/// evacuation): it takes no new work, its running instances are placed on
/// other cells and stop once their replacements run and are routed (or the
/// cell's evacuation timeout passes). Answers 202 once the cell's rep
/// accepted; the drain runs on the cell.
#[utoipa::path(
    post,
    path = "/v1/cells/{cell_id}/drain",
    tag = "cluster",
    params(("cell_id" = String, Path, description = "the cell to drain")),
    responses(
        (status = 202, description = "the cell drains"),
        (status = 404, body = lattice_models::ApiErrorBody, description = "no live cell with that id"),
        (status = 409, body = lattice_models::ApiErrorBody, description = "the only cell: its instances have nowhere to go"),
        (status = 503, body = lattice_models::ApiErrorBody, description = "the cell's rep cannot be reached"),
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    Path(cell_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cells = state.store.list_cells().await?;
    let Some(cell) = cells.iter().find(|c| c.cell_id == cell_id) else {
        return Err(ApiError::not_found(format!(
            "no live cell {cell_id:?} (see GET /v1/cells)"
        )));
    };
    if cells.len() == 1 {
        return Err(ApiError::conflict(format!(
            "cell {cell_id} is the cluster's only cell: its instances would have nowhere to go"
        )));
    }
    if let Err(err) = state.reps.evacuate(&cell.rep_address).await {
        tracing::warn!(%cell_id, rep = %cell.rep_address, error = %err, "cannot tell a cell to drain");
        return Err(ApiError::new(
            lattice_models::ApiErrorName::ServiceUnavailable,
            format!("cannot reach cell {cell_id}'s rep; is the cell running?"),
        ));
    }
    tracing::info!(%cell_id, "cell told to drain");
    Ok(StatusCode::ACCEPTED)
}

/// The query of `GET /v1/image_config`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ImageConfigQuery {
    /// The image as a Diego rootfs URL: `docker:///REPO#TAG`.
    pub rootfs: String,
}

/// Ours: the config of a Docker image (entrypoint, cmd, env, working dir,
/// user, exposed ports), read by a live cell from its engine (pulled
/// there first when absent). What `ltc create` needs to know before it
/// desires an app; Lattice ran a staging task (a whole container) for it.
#[utoipa::path(get, path = "/v1/image_config", tag = "cluster", params(ImageConfigQuery),
    responses(
        (status = 200, body = ImageConfig),
        (status = 400, body = lattice_models::ApiErrorBody, description = "rootfs is no docker:// URL"),
        (status = 404, body = lattice_models::ApiErrorBody, description = "the image cannot be had"),
        (status = 503, body = lattice_models::ApiErrorBody, description = "no cell could be asked"),
    ))]
pub async fn image_config(
    State(state): State<AppState>,
    Query(query): Query<ImageConfigQuery>,
) -> Result<Json<ImageConfig>, ApiError> {
    if !query.rootfs.starts_with("docker://") {
        return Err(ApiError::invalid_request(
            "rootfs",
            format!("rootfs {:?} is not a docker:// URL", query.rootfs),
        ));
    }
    let cells = state.store.list_cells().await?;
    let docker_cells = cells
        .iter()
        .filter(|c| c.rootfs_providers.contains_key("docker"));
    // The first cell that answers; one that cannot be reached (dying, its
    // presence not yet expired) is skipped.
    for cell in docker_cells {
        match state
            .reps
            .image_config(&cell.rep_address, &query.rootfs)
            .await
        {
            Ok(config) => return Ok(Json(config)),
            Err(RepClientError::Refused {
                status, message, ..
            }) if status == 400 || status == 404 => {
                let name = if status == 400 {
                    ApiErrorName::InvalidRequest
                } else {
                    ApiErrorName::ResourceNotFound
                };
                return Err(ApiError {
                    name,
                    message,
                    field: Some("rootfs".to_string()),
                });
            }
            Err(err) => {
                tracing::warn!(cell_id = %cell.cell_id, error = %err, "a cell could not read an image's config");
            }
        }
    }
    Err(ApiError::new(
        ApiErrorName::ServiceUnavailable,
        "no cell could read the image's config: is a cell of the cluster running?",
    ))
}

/// Live cells with what the BBS places on each (claimed or running work),
/// what their containers use and whether they drain (ours: `usage` and
/// `evacuating`, asked of each cell's rep; absent for a cell that did not
/// answer in 2 s).
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
            evacuating: None,
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
    let (mut usage, mut evacuating) = tokio::join!(
        crate::usage::cell_usage(&state, &cells),
        crate::usage::cells_evacuating(&state, &cells)
    );
    for cell in &mut responses {
        cell.usage = usage.remove(&cell.presence.cell_id);
        cell.evacuating = evacuating.remove(&cell.presence.cell_id);
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
