//! `/api/items`: a small in-memory resource with input validation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

#[derive(Clone, Serialize)]
pub struct Item {
    id: u64,
    name: String,
    quantity: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    name: String,
    #[serde(default)]
    quantity: u32,
}

#[derive(Default)]
pub struct Store {
    next_id: AtomicU64,
    items: Mutex<BTreeMap<u64, Item>>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Item>> {
        // A poisoned lock only means another request panicked mid-update of a map
        // that stays consistent per operation: keep serving.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Maps axum's body rejections into the error contract without echoing parser internals.
fn rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "request body is not valid JSON")
        }
        JsonRejection::JsonDataError(_) => ApiError::invalid(
            "body must be an object with \"name\" (string) and optional \"quantity\" (integer >= 0)",
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "could not read request body"),
    }
}

fn validate(item: &NewItem) -> Result<(), ApiError> {
    let name = item.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    if item.quantity > 1_000_000 {
        return Err(ApiError::invalid("quantity must be at most 1000000"));
    }
    Ok(())
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Item> = state.items().lock().values().cloned().collect();
    Json(json!({ "items": items }))
}

pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<NewItem>, JsonRejection>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let Json(new) = body.map_err(rejection)?;
    validate(&new)?;
    let id = state.items().next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let item = Item {
        id,
        name: new.name.trim().to_owned(),
        quantity: new.quantity,
    };
    state.items().lock().insert(id, item.clone());
    Ok((StatusCode::CREATED, Json(item)))
}

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "item id must be a positive integer",
        )
    })
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Item>, ApiError> {
    let id = parse_id(&raw)?;
    state
        .items()
        .lock()
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("item"))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    match state.items().lock().remove(&id) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("item")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate(&NewItem {
            name: "ok".into(),
            quantity: 1
        })
        .is_ok());
        assert!(validate(&NewItem {
            name: "  ".into(),
            quantity: 1
        })
        .is_err());
        assert!(validate(&NewItem {
            name: "x".repeat(101),
            quantity: 1
        })
        .is_err());
        assert!(validate(&NewItem {
            name: "x".into(),
            quantity: 2_000_000
        })
        .is_err());
    }
}
