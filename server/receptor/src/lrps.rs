//! `/v1/desired_lrps` (what users ask for) and `/v1/actual_lrps` (what runs).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lattice_bbs::modify::{modify_actual_lrp, modify_desired_lrp, Change, Modified};
use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter};
use lattice_models::validation::{validate_domain, validate_guid};
use lattice_models::{
    ActualLrp, ActualLrpEvent, ActualLrpState, ApiErrorName, DesiredLrp, DesiredLrpCreateRequest,
    DesiredLrpUpdateRequest,
};

use crate::error::ApiError;
use crate::extract::{parse_index, JsonBody};
use crate::{now_nanos, AppState};

/// Answers 201 with an empty body and no content type, as Diego does: its
/// clients treat any body as a failure. Read the LRP back with a GET.
#[utoipa::path(post, path = "/v1/desired_lrps", tag = "desired LRPs", request_body = lattice_models::DesiredLrpCreateRequest, responses((status = 201, description = "created; empty body, no content type (read it back)"), (status = 400, description = "InvalidJSON (unparsable, unknown field: named) or InvalidLRP (breaks a rule)", body = lattice_models::ApiErrorBody), (status = 409, description = "DesiredLRPAlreadyExists", body = lattice_models::ApiErrorBody), (status = 413, description = "RequestEntityTooLarge", body = lattice_models::ApiErrorBody)))]
pub async fn create_desired(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DesiredLrpCreateRequest>,
) -> Result<StatusCode, ApiError> {
    request
        .validate()
        .map_err(|e| ApiError::invalid(ApiErrorName::InvalidLrp, e))?;
    crate::check_privileged(&state.config, request.privileged)
        .map_err(|e| ApiError::invalid(ApiErrorName::InvalidLrp, e))?;
    let lrp = state
        .store
        .create_desired_lrp(request.into_desired_lrp())
        .await?;
    tracing::info!(process_guid = %lrp.process_guid, instances = lrp.instances, "LRP desired");
    Ok(StatusCode::CREATED)
}

#[utoipa::path(get, path = "/v1/desired_lrps", tag = "desired LRPs", responses((status = 200, body = Vec<lattice_models::DesiredLrp>)))]
pub async fn list_desired(
    State(state): State<AppState>,
) -> Result<Json<Vec<DesiredLrp>>, ApiError> {
    Ok(Json(
        state
            .store
            .list_desired_lrps(&DesiredLrpFilter::default())
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/domains/{domain}/desired_lrps", tag = "desired LRPs", params(("domain" = String, Path, description = "a domain")), responses((status = 200, body = Vec<lattice_models::DesiredLrp>), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody)))]
pub async fn list_desired_by_domain(
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> Result<Json<Vec<DesiredLrp>>, ApiError> {
    validate_domain("domain", &domain)?;
    let filter = DesiredLrpFilter {
        domain: Some(domain),
    };
    Ok(Json(state.store.list_desired_lrps(&filter).await?))
}

#[utoipa::path(get, path = "/v1/desired_lrps/{process_guid}", tag = "desired LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid")), responses((status = 200, body = lattice_models::DesiredLrp), (status = 404, description = "DesiredLRPNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn get_desired(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<Json<DesiredLrp>, ApiError> {
    validate_guid("process_guid", &guid)?;
    Ok(Json(state.store.get_desired_lrp(&guid).await?))
}

/// Applies the present fields of the update. With a `modification_tag` in the
/// body the update is conditional (409 if the LRP changed since the client
/// read it); without one, concurrent writers are retried so the last one wins.
#[utoipa::path(put, path = "/v1/desired_lrps/{process_guid}", tag = "desired LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid")), request_body = lattice_models::DesiredLrpUpdateRequest, responses((status = 204, description = "updated"), (status = 400, description = "InvalidJSON (unparsable, unknown field: named) or InvalidLRP (breaks a rule)", body = lattice_models::ApiErrorBody), (status = 404, description = "DesiredLRPNotFound", body = lattice_models::ApiErrorBody), (status = 409, description = "ResourceConflict: modification_tag is stale", body = lattice_models::ApiErrorBody)))]
pub async fn update_desired(
    State(state): State<AppState>,
    Path(guid): Path<String>,
    JsonBody(update): JsonBody<DesiredLrpUpdateRequest>,
) -> Result<StatusCode, ApiError> {
    validate_guid("process_guid", &guid)?;
    update
        .validate()
        .map_err(|e| ApiError::invalid(ApiErrorName::InvalidLrp, e))?;
    let updated = modify_desired_lrp(state.store.as_ref(), &guid, |lrp| {
        if let Some(expected) = &update.modification_tag {
            if *expected != lrp.modification_tag {
                return Err(ApiError::conflict(format!(
                    "desired LRP {guid:?} changed since modification tag {}:{}; re-read it and retry",
                    expected.epoch, expected.index
                )));
            }
        }
        Ok(if update.apply_to(lrp) {
            Change::Update
        } else {
            Change::Keep
        })
    })
    .await?;
    if let Modified::Updated(lrp) = updated {
        tracing::info!(process_guid = %guid, instances = lrp.instances, "LRP updated");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the desired LRP; the brain then stops its instances.
#[utoipa::path(delete, path = "/v1/desired_lrps/{process_guid}", tag = "desired LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid")), responses((status = 204, description = "removed; its instances are stopped"), (status = 404, description = "DesiredLRPNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn delete_desired(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_guid("process_guid", &guid)?;
    modify_desired_lrp(state.store.as_ref(), &guid, |_| {
        Ok::<_, ApiError>(Change::Delete)
    })
    .await?;
    tracing::info!(process_guid = %guid, "LRP removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/actual_lrps", tag = "actual LRPs", responses((status = 200, body = Vec<lattice_models::ActualLrp>)))]
pub async fn list_actual(State(state): State<AppState>) -> Result<Json<Vec<ActualLrp>>, ApiError> {
    Ok(Json(
        state
            .store
            .list_actual_lrps(&ActualLrpFilter::default())
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/actual_lrps/{process_guid}", tag = "actual LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid")), responses((status = 200, body = Vec<lattice_models::ActualLrp>), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody)))]
pub async fn list_actual_by_process_guid(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<Json<Vec<ActualLrp>>, ApiError> {
    validate_guid("process_guid", &guid)?;
    let filter = ActualLrpFilter {
        process_guid: Some(guid),
        ..Default::default()
    };
    Ok(Json(state.store.list_actual_lrps(&filter).await?))
}

#[utoipa::path(get, path = "/v1/domains/{domain}/actual_lrps", tag = "actual LRPs", params(("domain" = String, Path, description = "a domain")), responses((status = 200, body = Vec<lattice_models::ActualLrp>), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody)))]
pub async fn list_actual_by_domain(
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> Result<Json<Vec<ActualLrp>>, ApiError> {
    validate_domain("domain", &domain)?;
    let filter = ActualLrpFilter {
        domain: Some(domain),
        ..Default::default()
    };
    Ok(Json(state.store.list_actual_lrps(&filter).await?))
}

#[utoipa::path(get, path = "/v1/actual_lrps/{process_guid}/index/{index}", tag = "actual LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid"), ("index" = i64, Path, description = "the instance index")), responses((status = 200, body = lattice_models::ActualLrp), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody), (status = 404, description = "ActualLRPIndexNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn get_actual(
    State(state): State<AppState>,
    Path((guid, index)): Path<(String, String)>,
) -> Result<Json<ActualLrp>, ApiError> {
    validate_guid("process_guid", &guid)?;
    let index = parse_index(&index)?;
    Ok(Json(state.store.get_actual_lrp(&guid, index).await?))
}

/// Restarts one instance: it is handed back to the auction (UNCLAIMED); the
/// cell that ran it sees it is no longer its own and destroys the container.
#[utoipa::path(delete, path = "/v1/actual_lrps/{process_guid}/index/{index}", tag = "actual LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid"), ("index" = i64, Path, description = "the instance index")), responses((status = 204, description = "killed; the instance is started again"), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody), (status = 404, description = "ActualLRPIndexNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn restart_actual(
    State(state): State<AppState>,
    Path((guid, index)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_guid("process_guid", &guid)?;
    let index = parse_index(&index)?;
    let restarted = modify_actual_lrp(state.store.as_ref(), &guid, index, |lrp| {
        let event = match lrp.state {
            ActualLrpState::Unclaimed => return Ok(Change::Keep),
            ActualLrpState::Claimed | ActualLrpState::Running => ActualLrpEvent::Unclaim,
            ActualLrpState::Crashed => ActualLrpEvent::Restart,
        };
        lrp.apply(event, now_nanos())
            .map_err(|e| ApiError::conflict(e.to_string()))?;
        Ok(Change::Update)
    })
    .await?;
    if let Modified::Updated(_) = restarted {
        tracing::info!(process_guid = %guid, index, "instance restart requested");
    }
    Ok(StatusCode::NO_CONTENT)
}
