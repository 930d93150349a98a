//! Containers' usage, gathered from the cells that sample it: `GET
//! /v1/actual_lrps/{process_guid}/metrics` and the `usage` of `GET
//! /v1/cells` (both ours); and whether each cell drains, which only its rep
//! knows (`evacuating` of `GET /v1/cells`).
//!
//! Samples live on the cells (each rep samples its containers every few
//! seconds and keeps the latest), not in the store: they change all the
//! time, are worth nothing once old, and would cost a write each. The
//! receptor asks the reps concerned, all at once, with the cluster secret.
//!
//! # Caveats
//! A cell that does not answer within [`REP_TIMEOUT`] is left out: its
//! instances have no sample and its usage is absent. That is logged, never
//! an error of the request.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use lattice_bbs::ActualLrpFilter;
use lattice_client::RepClientError;
use lattice_models::validation::validate_guid;
use lattice_models::{ActualLrpState, CellPresence, CellUsage, ContainerMetrics};

use crate::error::ApiError;
use crate::AppState;

/// How long the receptor waits for a cell's samples.
pub const REP_TIMEOUT: Duration = Duration::from_secs(2);

/// `ask`'s answer of every cell in `cells` that answered in time, by cell
/// id, all asked at once; `what` names the answer in the log.
async fn ask_each<'a, T, F, Fut>(
    cells: impl IntoIterator<Item = &'a CellPresence>,
    what: &str,
    ask: F,
) -> HashMap<String, T>
where
    F: Fn(&'a CellPresence) -> Fut,
    Fut: std::future::Future<Output = Result<T, RepClientError>>,
{
    let asks = cells.into_iter().map(|cell| {
        let asked = tokio::time::timeout(REP_TIMEOUT, ask(cell));
        async move {
            match asked.await {
                Ok(Ok(answer)) => Some((cell.cell_id.clone(), answer)),
                Ok(Err(err)) => {
                    tracing::warn!(cell_id = %cell.cell_id, error = %err, "cannot read the cell's {what}");
                    None
                }
                Err(_) => {
                    tracing::warn!(cell_id = %cell.cell_id, timeout = ?REP_TIMEOUT, "the cell did not send its {what} in time");
                    None
                }
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The latest samples of every cell in `cells` that answered in time, by
/// cell id.
pub(crate) async fn gather<'a>(
    state: &'a AppState,
    cells: impl IntoIterator<Item = &'a CellPresence>,
) -> HashMap<String, Vec<ContainerMetrics>> {
    ask_each(cells, "usage samples", |cell| {
        state.reps.container_metrics(&cell.rep_address)
    })
    .await
}

/// Whether each cell that answered in time drains, by cell id.
pub(crate) async fn cells_evacuating<'a>(
    state: &'a AppState,
    cells: &'a [CellPresence],
) -> HashMap<String, bool> {
    ask_each(cells, "state", |cell| async move {
        let cell_state = state.reps.state(&cell.rep_address).await?;
        Ok(cell_state.evacuating)
    })
    .await
}

/// What each cell that answered uses, by cell id.
pub(crate) async fn cell_usage(
    state: &AppState,
    cells: &[CellPresence],
) -> HashMap<String, CellUsage> {
    gather(state, cells)
        .await
        .into_iter()
        .map(|(cell_id, samples)| (cell_id, CellUsage::sum(&samples)))
        .collect()
}

/// The latest usage sample of each claimed or running instance of the LRP
/// (ours; Diego's `ContainerMetric` with quotas), sorted by index. An
/// instance whose cell did not answer, or that was not sampled yet, is
/// absent.
#[utoipa::path(get, path = "/v1/actual_lrps/{process_guid}/metrics", tag = "actual LRPs", params(("process_guid" = String, Path, description = "the desired LRP's process guid")), responses((status = 200, body = Vec<lattice_models::ContainerMetrics>, description = "ours: one sample per instance its cell sampled, by index"), (status = 400, description = "InvalidRequest: a malformed path parameter", body = lattice_models::ApiErrorBody), (status = 404, description = "DesiredLRPNotFound", body = lattice_models::ApiErrorBody)))]
pub async fn actual_lrp_metrics(
    State(state): State<AppState>,
    Path(guid): Path<String>,
) -> Result<Json<Vec<ContainerMetrics>>, ApiError> {
    validate_guid("process_guid", &guid)?;
    state.store.get_desired_lrp(&guid).await?;
    let actual = state
        .store
        .list_actual_lrps(&ActualLrpFilter {
            process_guid: Some(guid.clone()),
            ..Default::default()
        })
        .await?;
    let placed: Vec<_> = actual
        .iter()
        .filter(|a| matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running))
        .collect();
    let cells: Vec<CellPresence> = state
        .store
        .list_cells()
        .await?
        .into_iter()
        .filter(|cell| placed.iter().any(|a| a.cell_id == cell.cell_id))
        .collect();
    let mut samples: Vec<ContainerMetrics> = gather(&state, &cells)
        .await
        .into_values()
        .flatten()
        .filter(|sample| {
            // Only the instance the store knows: not one being stopped, nor
            // a leftover of an earlier instance guid.
            placed.iter().any(|a| {
                a.process_guid == sample.process_guid
                    && a.index == sample.index
                    && a.instance_guid == sample.instance_guid
                    && a.cell_id == sample.cell_id
            })
        })
        .collect();
    samples.sort_by_key(|sample| sample.index);
    Ok(Json(samples))
}
