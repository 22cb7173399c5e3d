//! `PUT /v1/paths/{node}`: a node's signed counts of its gated peers by path, shown on the
//! dashboard ([`crate::ui::paths`]); kept in memory only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use meshtun_proto::paths::PathReport;

use super::{check_signed, now_ms, Api, ApiError};

/// Keeps the report as the node's newest; 204. A body that is not a
/// [`meshtun_proto::paths`] report, or breaks its bounds, is refused with 422.
pub(super) async fn report(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_signed(&api, &node, &method, &uri, &headers, body.clone()).await?;
    let report = PathReport::decode(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("path report of {node}: {e}"),
        )
    })?;
    if !api.ui.paths.report(&node, report, now_ms(&api)) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the path report table is full",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
