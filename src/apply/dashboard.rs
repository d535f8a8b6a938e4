//! The web dashboard: a read-only page at `/` (HTML, CSS and JS embedded in the binary), and the
//! two routes only it needs: `/v1/whoami` (the namespaces the token may see) and
//! `/v1/history/{ns}/{name}` (a group's capacity and metrics over time, for its charts).
//!
//! # Rules
//! - The page holds no data of its own: everything comes from the `/v1/*` routes with the
//!   token the user typed (kept in the tab's `sessionStorage`), so it sees exactly what `ms`
//!   with that token sees. The assets themselves are public (they carry no data).
//! - No CDN, no build step: the assets are plain files in `dashboard/`, `include_str!`ed; the
//!   whole page stays under 200 KB (a test checks it).
//! - A strict content security policy: scripts, styles and connections to this origin only,
//!   no inline script, no framing.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authorize, Access};
use super::{ApiError, ApiResult, Context};
use crate::manifest::{Kind, ObjectKey};

/// One embedded file of the page.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file of the page: `/` and what it loads.
pub const ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("dashboard/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/app.css"),
    },
    Asset {
        path: "/ui/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("dashboard/icon.svg"),
    },
];

/// The page's content security policy.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// How far back the history route looks at most.
const MAX_HOURS: u32 = 6;

/// An asset with its validator: an `ETag` from its content, so a reload costs a 304.
fn serve_asset(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = etag(asset.body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::ETAG, HeaderValue::from_str(&etag).ok()),
        (
            header::CACHE_CONTROL,
            Some(HeaderValue::from_static("no-cache")),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            Some(HeaderValue::from_static(CSP)),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            Some(HeaderValue::from_static("nosniff")),
        ),
        (
            header::REFERRER_POLICY,
            Some(HeaderValue::from_static("no-referrer")),
        ),
    ];
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    for (name, value) in common {
        if let Some(v) = value {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

fn etag(body: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(body.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `GET /v1/whoami`: what the caller's token may see, so the page watches only that.
async fn whoami(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let access = authorize(&ctx, &headers)?;
    let token_required = !ctx.config.tokens.is_empty();
    Ok(Json(match access {
        Access::All => {
            json!({ "allNamespaces": true, "namespaces": namespaces_now(&ctx), "tokenRequired": token_required })
        }
        Access::Namespaces(list) => {
            json!({ "allNamespaces": false, "namespaces": list, "tokenRequired": token_required })
        }
    }))
}

/// The namespaces that hold objects now (what a token that sees all can pick from).
fn namespaces_now(ctx: &Context) -> Vec<String> {
    let desired = ctx.desired.borrow().clone();
    let set: std::collections::BTreeSet<&str> = desired
        .objects
        .keys()
        .map(|k| k.namespace.as_str())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

/// Query of the history route.
#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    /// How many hours back (1 to [`MAX_HOURS`]; default all that is kept).
    hours: Option<u32>,
}

/// `GET /v1/history/{ns}/{name}`: the group's samples of the last hours, oldest first.
async fn history(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    authorize(&ctx, &headers)?.check(&ns)?;
    let key = ObjectKey::new(Kind::AutoScalingGroup, &ns, &name);
    if !ctx.desired.borrow().objects.contains_key(&key) {
        return Err(ApiError::not_found(Kind::AutoScalingGroup, &ns, &name));
    }
    let hours = q.hours.unwrap_or(MAX_HOURS).clamp(1, MAX_HOURS);
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::hours(i64::from(hours));
    Ok(Json(json!({
        "now": now,
        "since": since,
        "items": ctx.history.samples(&key, since),
    })))
}

/// The dashboard's routes: its assets, `/v1/whoami`, `/v1/history/{ns}/{name}`.
pub fn routes() -> Router<Arc<Context>> {
    let mut router = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/history/{ns}/{name}", get(history));
    for asset in &ASSETS {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve_asset(asset, &headers) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_page_is_under_200_kb_and_loads_nothing_from_elsewhere() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 200 * 1024, "the page weighs {total} bytes");
        for a in &ASSETS {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is a name, not a request.
                let rest = a.body.replace("http://www.w3.org/2000/svg", "");
                assert!(
                    !rest.contains(needle),
                    "{} mentions {needle}: the page must load nothing from elsewhere",
                    a.path
                );
            }
        }
    }

    #[test]
    fn an_asset_is_revalidated_with_its_etag() {
        let page = &ASSETS[0];
        let first = serve_asset(page, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        assert!(first.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve_asset(page, &again).status(), StatusCode::NOT_MODIFIED);
    }
}
