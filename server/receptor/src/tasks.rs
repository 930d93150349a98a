//! `/v1/tasks`: create, read, cancel and delete tasks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lattice_bbs::modify::{modify_task, Change};
use lattice_bbs::TaskFilter;
use lattice_models::validation::{validate_domain, validate_guid};
use lattice_models::{ApiErrorName, Task, TaskCreateRequest, TaskState};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::{now_nanos, AppState};

/// Reason recorded on a task cancelled through the API.
pub const CANCELLED_REASON: &str = "task was cancelled";

/// Answers 201 with an empty body and no content type, as Diego does: its
/// clients treat any body as a failure. Read the task back with a GET.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = lattice_models::TaskCreateRequest, responses((status = 201, description = "created; empty body, no content type (read it back)"), (status = 400, description = "InvalidJSON (unparsable, unknown field: named) or InvalidTask (breaks a rule)", body = lattice_models::ApiErrorBody), (status = 409, description = "TaskGuidAlreadyExists", body = lattice_models::ApiErrorBody), (status = 413, description = "RequestEntityTooLarge", body = lattice_models::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<TaskCreateRequest>,
) -> Result<StatusCode, ApiError> {
    request
        .validate()
        .map_err(|e| ApiError::invalid(ApiErrorName::InvalidTask, e))?;
    crate::check_privileged(&state.config, request.privileged)
        .map_err(|e| ApiError::invalid(ApiErrorName::InvalidTask, e))?;
    let task = state
        .store
        .create_task(request.into_task(now_nanos()))
        .await?;
    tracing::info!(task_guid = %task.task_guid, domain = %task.domain, "task desired");
    Ok(StatusCode::CREATED)
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", responses((status = 200, body = Vec<lattice_models::Task>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Task>>, ApiError> {
    Ok(Json(state.store.list_tasks(&TaskFilter::default()).await?))
}

#[utoipa::path(get, path = "/v1/domains/{domain}/tasks", tag = "tasks", params(("domain" = String, Path, description = "a domain")), responses((status = 200, body = Vec<lattice_models::Task>), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody)))]
pub async fn list_by_domain(
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> Result<Json<Vec<Task>>, ApiError> {
    validate_domain("domain", &domain)?;
    let filter = TaskFilter {
        domain: Some(domain),
        ..Default::default()
    };
    Ok(Json(state.store.list_tasks(&filter).await?))
}

#[utoipa::path(get, path = "/v1/tasks/{task_guid}", tag = "tasks", params(("task_guid" = String, Path, description = "the task's guid")), responses((status = 200, body = lattice_models::Task), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody), (status = 404, description = "TaskNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<Json<Task>, ApiError> {
    validate_guid("task_guid", &guid)?;
    Ok(Json(state.store.get_task(&guid).await?))
}

/// Deletes a COMPLETED task: the client has taken its result.
#[utoipa::path(delete, path = "/v1/tasks/{task_guid}", tag = "tasks", params(("task_guid" = String, Path, description = "the task's guid")), responses((status = 204, description = "deleted"), (status = 404, description = "TaskNotFound", body = lattice_models::ApiErrorBody), (status = 409, description = "TaskNotDeletable: not COMPLETED", body = lattice_models::ApiErrorBody)))]
pub async fn delete_one(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_guid("task_guid", &guid)?;
    let task = state.store.get_task(&guid).await?;
    if task.state != TaskState::Completed {
        return Err(ApiError::new(
            ApiErrorName::TaskNotDeletable,
            format!(
                "task {guid:?} is {}; only a COMPLETED task can be deleted (cancel it first)",
                task.state
            ),
        ));
    }
    state
        .store
        .delete_task(&guid, &task.modification_tag)
        .await?;
    tracing::info!(task_guid = %guid, "task deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a task that has not completed: it completes failed with
/// [`CANCELLED_REASON`]; a cell running it sees the change and stops it.
#[utoipa::path(post, path = "/v1/tasks/{task_guid}/cancel", tag = "tasks", params(("task_guid" = String, Path, description = "the task's guid")), responses((status = 204, description = "cancelled: COMPLETED, failed"), (status = 404, description = "TaskNotFound", body = lattice_models::ApiErrorBody), (status = 409, description = "ResourceConflict: already completed", body = lattice_models::ApiErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_guid("task_guid", &guid)?;
    modify_task(state.store.as_ref(), &guid, |task| {
        if task.state.is_terminal() {
            return Err(ApiError::conflict(format!(
                "task {guid:?} is already {}; there is nothing to cancel",
                task.state
            )));
        }
        task.fail(CANCELLED_REASON, now_nanos())
            .map_err(|e| ApiError::conflict(e.to_string()))?;
        Ok(Change::Update)
    })
    .await?;
    tracing::info!(task_guid = %guid, "task cancelled");
    Ok(StatusCode::NO_CONTENT)
}
