//! The ask endpoint of on-demand TLS, as an app written for Caddy's `on_demand_tls ask`
//! serves it: `GET /tls/allowed?domain=NAME` answers 200 when the app serves NAME (a
//! customer's own domain) and 404 otherwise, so the edge orders certificates only for
//! names the app knows. Here the names come from `TLS_ALLOWED_DOMAINS`; a real app
//! looks them up in its customer table.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub struct Ask {
    domain: Option<String>,
}

/// Whether `domain` is one of `allowed` (exact, or under a `*.suffix` entry).
pub fn allowed(allowed: &[String], domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|a| match a.strip_prefix("*.") {
        Some(suffix) => domain
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => *a == domain,
    })
}

pub async fn ask(
    State(state): State<AppState>,
    Query(q): Query<Ask>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(domain) = q.domain.filter(|d| !d.is_empty()) else {
        return Err(ApiError::invalid("give the name as ?domain=NAME"));
    };
    let yes = allowed(state.tls_allowed(), &domain);
    tracing::info!(event = "tls_ask", domain = %domain, allowed = yes, "on-demand TLS ask");
    if yes {
        Ok(Json(
            serde_json::json!({ "domain": domain, "allowed": true }),
        ))
    } else {
        Err(ApiError::not_found(&format!("domain {domain:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn exact_names_and_wildcard_entries() {
        let list = vec!["shop.customer.test".to_owned(), "*.tenant.test".to_owned()];
        assert!(allowed(&list, "Shop.Customer.test."));
        assert!(allowed(&list, "a.tenant.test"));
        assert!(!allowed(&list, "tenant.test"));
        assert!(!allowed(&list, "evil-tenant.test"));
        assert!(!allowed(&list, "other.customer.test"));
    }
}
