//! Who may do what: the bearer token names the namespaces a caller may see and change, and the
//! caller's key for the rate limits of changes and pushed values.
//!
//! # Rules
//! - No tokens configured: everything is allowed (the endpoint then listens on loopback only).
//! - A token with namespace `*` may access every namespace; another only those it lists.
//! - Tokens are compared in constant time (hashed first, every token compared in full).

use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, ApiResult, Context};
use crate::config::TokenConfig;

/// What the caller's token may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Access {
    /// No tokens configured (loopback only), or a `*` token.
    All,
    Namespaces(Vec<String>),
}

impl Access {
    pub(super) fn allows(&self, namespace: &str) -> bool {
        match self {
            Access::All => true,
            Access::Namespaces(ns) => ns.iter().any(|n| n == namespace),
        }
    }

    pub(super) fn check(&self, namespace: &str) -> ApiResult<()> {
        if self.allows(namespace) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token may not access namespace `{namespace}`"),
            ))
        }
    }
}

/// The configured token equal to `presented`, if any. Both sides are hashed first and every
/// token is compared in full, so neither the time taken nor an early exit reveals how much of
/// a token matched or how long it is.
fn find_token<'a>(tokens: &'a [TokenConfig], presented: &str) -> Option<(usize, &'a TokenConfig)> {
    use sha2::{Digest, Sha256};
    let p = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        let d = Sha256::digest(t.token.as_bytes());
        let diff = d
            .iter()
            .zip(p.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && found.is_none() {
            found = Some((i, t));
        }
    }
    found
}

/// Checks the bearer token against `tokens`; returns what it may access and the caller's key
/// for rate limits.
fn authenticate(tokens: &[TokenConfig], headers: &HeaderMap) -> ApiResult<(Access, String)> {
    if tokens.is_empty() {
        return Ok((Access::All, "anonymous".to_string()));
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("a bearer token is required (ms login --token ...)"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let (index, config) = find_token(tokens, token).ok_or_else(|| unauthorized("unknown token"))?;
    let access = if config.namespaces.iter().any(|n| n == "*") {
        Access::All
    } else {
        Access::Namespaces(config.namespaces.clone())
    };
    Ok((access, format!("token {index}")))
}

/// What the request's token may access.
///
/// # Errors
/// 401 without a known token.
pub(super) fn authorize(ctx: &Context, headers: &HeaderMap) -> ApiResult<Access> {
    authenticate(&ctx.config.tokens, headers).map(|(access, _)| access)
}

/// Checks the request carries a known token (when tokens are configured), for read routes
/// defined in other modules.
///
/// # Errors
/// 401 without a known token.
pub fn authorized(ctx: &Context, headers: &HeaderMap) -> ApiResult<()> {
    authorize(ctx, headers).map(|_| ())
}

/// Checks the request's bearer token for `namespace`, as every `/v1/*` route does (for routes
/// defined in other modules).
///
/// # Errors
/// 401 without a known token, 403 when the token may not access `namespace`.
pub fn check_access(ctx: &Context, headers: &HeaderMap, namespace: &str) -> ApiResult<()> {
    authorize(ctx, headers)?.check(namespace)
}

/// Where a setting of the controller configuration lives, for messages.
fn config_file(ctx: &Context) -> String {
    ctx.config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the controller configuration (ms controller --config FILE)".into())
}

/// Request bytes that cost one write permit: a 1 MiB apply costs 16 (the watcher re-reads
/// what an apply writes, for every tenant, so size is what loads the controller).
const BYTES_PER_WRITE_PERMIT: usize = 64 * 1024;

/// Write permits a change of `bytes` bytes costs.
fn write_permits(bytes: usize) -> u32 {
    u32::try_from(1 + bytes / BYTES_PER_WRITE_PERMIT).unwrap_or(u32::MAX)
}

/// [`authorize`] for a change of `bytes` bytes: also takes permits of the caller's write rate.
///
/// # Errors
/// 401 without a known token; 429 when the token changes faster than `api.writesPerSecond`.
pub(super) fn authorize_write(
    ctx: &Context,
    headers: &HeaderMap,
    bytes: usize,
) -> ApiResult<Access> {
    let (access, caller) = authenticate(&ctx.config.tokens, headers)?;
    ctx.write_limit
        .take_n(&caller, write_permits(bytes))
        .map_err(|wait| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many changes from this token: at most {} per second, {} at once, a change costing one per 64 KiB (api.writesPerSecond, api.writeBurst in {}); try again in {:.1}s",
                    ctx.config.api.writes_per_second,
                    ctx.config.api.write_burst,
                    config_file(ctx),
                    wait.as_secs_f64()
                ),
            )
        })?;
    Ok(access)
}

/// Checks the token for pushing a metric value to `namespace`, and the caller's push rate.
///
/// # Errors
/// 401/403 as [`check_access`]; 429 when the token pushes faster than `api.pushesPerSecond`.
pub fn check_push(ctx: &Context, headers: &HeaderMap, namespace: &str) -> ApiResult<()> {
    let (access, caller) = authenticate(&ctx.config.tokens, headers)?;
    access.check(namespace)?;
    ctx.push_limit.take(&caller).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many metric values from this token: at most {} per second, {} at once (api.pushesPerSecond, api.pushBurst in {}); try again in {:.1}s",
                ctx.config.api.pushes_per_second,
                ctx.config.api.push_burst,
                config_file(ctx),
                wait.as_secs_f64()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::AUTHORIZATION;

    fn token(t: &str, namespaces: &[&str]) -> TokenConfig {
        TokenConfig {
            token: t.into(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn status(r: ApiResult<(Access, String)>) -> StatusCode {
        r.unwrap_err().status
    }

    #[test]
    fn without_configured_tokens_everyone_may_do_everything() {
        let (access, caller) = authenticate(&[], &HeaderMap::new()).unwrap();
        assert_eq!(access, Access::All);
        assert_eq!(caller, "anonymous");
        assert!(access.allows("any"));
    }

    #[test]
    fn a_missing_malformed_or_unknown_token_is_a_401() {
        let tokens = [token("secret-a", &["team-a"])];
        assert_eq!(
            status(authenticate(&tokens, &HeaderMap::new())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(authenticate(&tokens, &bearer("Basic secret-a"))),
            StatusCode::UNAUTHORIZED
        );
        let unknown = authenticate(&tokens, &bearer("Bearer secret-b")).unwrap_err();
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert_eq!(unknown.message, "unknown token");
        // A prefix of a token is not the token.
        assert!(authenticate(&tokens, &bearer("Bearer secret-")).is_err());
    }

    #[test]
    fn a_token_reaches_only_its_namespaces_and_star_reaches_all() {
        let tokens = [token("a", &["team-a"]), token("root", &["*"])];
        let (access, caller) = authenticate(&tokens, &bearer("Bearer a")).unwrap();
        assert_eq!(caller, "token 0");
        assert!(access.allows("team-a") && !access.allows("team-b"));
        let refused = access.check("team-b").unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.message,
            "this token may not access namespace `team-b`"
        );
        // Surrounding blanks are forgiven, as a pasted token often has them.
        let (root, caller) = authenticate(&tokens, &bearer("Bearer  root ")).unwrap();
        assert_eq!((root, caller.as_str()), (Access::All, "token 1"));
    }

    #[test]
    fn the_first_of_two_equal_tokens_decides() {
        let tokens = [token("same", &["team-a"]), token("same", &["*"])];
        assert_eq!(find_token(&tokens, "same").unwrap().0, 0);
        assert!(find_token(&tokens, "other").is_none());
    }

    #[test]
    fn a_change_costs_one_permit_per_64_kib_begun() {
        assert_eq!(write_permits(0), 1);
        assert_eq!(write_permits(64 * 1024 - 1), 1);
        assert_eq!(write_permits(64 * 1024), 2);
        assert_eq!(write_permits(1 << 20), 17);
    }
}
