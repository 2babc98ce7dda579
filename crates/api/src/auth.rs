//! Who is calling and what they may do.
//!
//! A token is `nct_` and 43 characters of base64url (256 random bits), shown once when it is
//! made and stored only as its SHA-256 (a token is a random key, not a password: a fast hash is
//! enough, and lookups stay cheap). Each token has a level — `read` (resources, counts, miner
//! status, its own allocations), `allocate` (also make, change and release its own
//! allocations) or `admin` (everyone's allocations, penalties, sync, the webhook outbox) — and
//! optionally `secrets`: passwords in every response, not only in the one that first delivers
//! an allocation. A token owns the allocations it made (`token:<id>`).
//!
//! With client certificates (mutual TLS, as register_api), a request without a token is
//! authenticated by its certificate (`mtls:<sha256 of the certificate>`) at the configured
//! level, so a register_api client works unchanged. The IP allow-list refuses anyone else
//! before any of this.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problem::Problem;
use crate::state::AppState;

/// What a caller may do, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Read,
    Allocate,
    Admin,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Allocate => "allocate",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Level {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        match s.trim() {
            "read" => Ok(Self::Read),
            "allocate" => Ok(Self::Allocate),
            "admin" => Ok(Self::Admin),
            other => Err(ScopeError(other.to_owned())),
        }
    }
}

/// A scope the token store does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope '{0}': give read, allocate or admin, optionally with secrets (e.g. allocate,secrets)")]
pub struct ScopeError(pub String);

/// A token's scope: its level, and whether passwords are shown to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub level: Level,
    pub secrets: bool,
}

impl FromStr for Scope {
    type Err = ScopeError;
    /// `read`, `allocate`, `admin`, each optionally with `,secrets` (or `+secrets`).
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        let mut level = None;
        let mut secrets = false;
        for part in s.split([',', '+']).map(str::trim).filter(|p| !p.is_empty()) {
            if part == "secrets" {
                secrets = true;
            } else if level.replace(part.parse::<Level>()?).is_some() {
                return Err(ScopeError(s.to_owned()));
            }
        }
        Ok(Self { level: level.ok_or_else(|| ScopeError(s.to_owned()))?, secrets })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level.as_str())?;
        if self.secrets {
            f.write_str(",secrets")?;
        }
        Ok(())
    }
}

/// A new token: the secret to show once, and the hash to store.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let secret = format!("nct_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&secret);
    (secret, hash)
}

/// The stored form of a token: SHA-256, lower-case hex.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Owner of what it makes: `token:<id>` or `mtls:<fingerprint>`.
    pub owner: String,
    /// The token's name, or the certificate's fingerprint.
    pub name: String,
    pub scope: Scope,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.scope.level == Level::Admin
    }

    /// Whether it may see the allocation owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_admin() || self.owner == owner
    }
}

/// What the connection says about the client: its address and, under mutual TLS, the SHA-256
/// of its certificate. Set by the server on every request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub client_cert_sha256: Option<String>,
}

/// The outcome of authentication, in the request's extensions.
#[derive(Debug, Clone)]
pub enum Authn {
    Ok(Principal),
    /// No credentials at all.
    Missing,
    /// Credentials that do not authenticate (unknown or revoked token, malformed header).
    Invalid(String),
}

/// Recently seen tokens, so a request does not cost a database read (revocation takes effect
/// within [`TOKEN_CACHE_TTL`]).
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, Option<Principal>)>>,
}

/// How long a token lookup is reused.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

impl TokenCache {
    fn lookup(&self, state: &AppState, secret: &str) -> Result<Option<Principal>, Problem> {
        let hash = hash_token(secret);
        if let Some((at, p)) = self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&hash) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(p.clone());
            }
        }
        let found = state.db().token_by_secret(&hash)?.and_then(|t| {
            let scope = t.scope.parse::<Scope>().ok()?;
            Some(Principal { owner: format!("token:{}", t.id), name: t.name, scope })
        });
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(hash, (Instant::now(), found.clone()));
        Ok(found)
    }
}

/// The middleware: refuses addresses outside the allow-list (403), then records who is calling
/// ([`Authn`]) for the handlers' extractors, which answer 401/403 in their own format.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let allow = &state.config().allow_ips;
    if !allow.is_empty() {
        let ok = conn.as_ref().is_some_and(|c| allow.contains(&canonical(c.peer.ip())));
        if !ok {
            return Problem::forbidden("this address is not on the server's allow-list (--allow-ip)").into_response();
        }
    }
    let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.to_str().map(str::to_owned));
    let authn = match header {
        Some(Ok(h)) => match h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) {
            Some(secret) => match state.tokens().lookup(&state, secret.trim()) {
                Ok(Some(p)) => Authn::Ok(p),
                Ok(None) => Authn::Invalid("unknown or revoked token".into()),
                Err(p) => return p.into_response(),
            },
            None => Authn::Invalid("the Authorization header must be `Bearer <token>`".into()),
        },
        Some(Err(_)) => Authn::Invalid("the Authorization header is not text".into()),
        None => match (conn.and_then(|c| c.client_cert_sha256), state.config().tls.as_ref()) {
            (Some(fp), Some(tls)) if tls.client_ca.is_some() => Authn::Ok(Principal {
                owner: format!("mtls:{fp}"),
                name: fp,
                scope: Scope { level: tls.client_scope, secrets: tls.client_scope == Level::Admin },
            }),
            _ => Authn::Missing,
        },
    };
    req.extensions_mut().insert(authn);
    next.run(req).await
}

/// An IPv4 client seen through an IPv6 socket compares as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The caller of a `/v1` route (401/403 as problems).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller's level is at least `level`.
    pub fn require(&self, level: Level) -> Result<(), Problem> {
        if self.0.scope.level >= level {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs a token with scope {} (this one has {})",
                level.as_str(),
                self.0.scope
            )))
        }
    }
}

/// A request without valid credentials, and why (shown to the caller: it never holds a secret).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// The caller a request was authenticated as, by the authentication layer.
pub fn principal(parts: &Parts) -> Result<Principal, Unauthenticated> {
    match parts.extensions.get::<Authn>() {
        Some(Authn::Ok(p)) => Ok(p.clone()),
        Some(Authn::Invalid(why)) => Err(Unauthenticated(why.clone())),
        _ => Err(Unauthenticated(
            "no credentials: send `Authorization: Bearer <token>` (nicompute api token create)".into(),
        )),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        principal(parts).map(Caller).map_err(|e| Problem::unauthorized(e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!("allocate".parse::<Scope>(), Ok(Scope { level: Level::Allocate, secrets: false }));
        let s: Scope = "admin,secrets".parse().expect("scope");
        assert_eq!((s.level, s.secrets, s.to_string().as_str()), (Level::Admin, true, "admin,secrets"));
        assert!("read,admin".parse::<Scope>().is_err());
        assert!("secrets".parse::<Scope>().is_err());
        assert!("root".parse::<Scope>().is_err());
        assert!(Level::Read < Level::Allocate && Level::Allocate < Level::Admin);
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("nct_") && a.len() == 47, "{a}");
        assert_eq!(ha, hash_token(&a));
        assert!(!ha.contains(&a[4..]));
    }
}
