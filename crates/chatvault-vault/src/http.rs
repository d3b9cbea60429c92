//! The HTTP/JSON API (PROTOCOL.md §4, §6, §9) on axum.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, MatchedPath, Path, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatvault_vault_core::api::{
    self, ErrorCode, b64_decode, b64_encode, b64std_decode, b64std_encode,
};
use chatvault_vault_core::{
    AccountId, AccountState, Error as CoreError, RECORD_VERSION, RegistrationFinish, SUITE_ID,
    Vault,
};
use serde::de::DeserializeOwned;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{CommitmentWrite, Store};
use crate::token::Verifier;
use crate::{Settings, unix_now};

#[path = "realm_http.rs"]
mod realm;

/// The OpenAPI document, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every route: (method, path template). The OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts/{account}/register/start"),
    ("post", "/v1/accounts/{account}/register/finish"),
    ("post", "/v1/accounts/{account}/recover/start"),
    ("post", "/v1/accounts/{account}/recover/finish"),
    ("post", "/v1/accounts/{account}/delete"),
    ("delete", "/v1/accounts/{account}"),
    ("get", "/v1/accounts/{account}/commitment"),
    ("put", "/v1/accounts/{account}/commitment"),
    ("post", "/v1/realm/accounts/{account}/register1"),
    ("post", "/v1/realm/accounts/{account}/register2"),
    ("post", "/v1/realm/accounts/{account}/recover1"),
    ("post", "/v1/realm/accounts/{account}/recover2"),
    ("post", "/v1/realm/accounts/{account}/recover3"),
    ("post", "/v1/realm/accounts/{account}/delete"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Shared state of all handlers.
pub struct AppState<S> {
    /// The protocol engine (holds the vault keys).
    pub vault: Vault,
    /// The record store.
    pub store: S,
    /// Account token verifier.
    pub verifier: Verifier,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// The threshold realm keys (PROTOCOL.md §13.1); `None`: the realm API answers 404.
    pub realm: Option<chatvault_threshold::RealmKeys>,
    ip_limit: RateLimiter<IpAddr>,
    account_limit: RateLimiter<String>,
    /// The last `/healthz` database ping: when, and whether it succeeded.
    health: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl<S> AppState<S> {
    /// Builds the state.
    pub fn new(vault: Vault, store: S, verifier: Verifier, settings: Settings) -> Self {
        Self {
            ip_limit: RateLimiter::new(settings.rate_limit_per_ip),
            account_limit: RateLimiter::new(settings.rate_limit_per_account),
            vault,
            store,
            verifier,
            settings,
            metrics: Metrics::default(),
            realm: None,
            health: tokio::sync::Mutex::new(None),
        }
    }
}

impl<S> AppState<S> {
    /// Serves the threshold realm API with `keys` (PROTOCOL.md §13).
    pub fn with_realm(mut self, keys: chatvault_threshold::RealmKeys) -> Self {
        self.realm = Some(keys);
        self
    }
}

/// A JSON error answer `{"error", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    fn store(e: crate::Error) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the vault's database is unavailable; try again later",
        )
    }

    /// A failure opening a stored record: the server's fault, never the client's.
    fn record(e: CoreError) -> Self {
        tracing::error!(error = %e, "cannot open a stored record");
        match e {
            CoreError::UnsupportedVersion { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::UnsupportedVersion,
                e.to_string(),
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "stored record is corrupted",
            ),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let msg = e.to_string();
        let (status, code) = match &e {
            CoreError::UnsupportedVersion { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnsupportedVersion)
            }
            CoreError::Corrupted { what } if *what == "recovery proof" => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidProof)
            }
            CoreError::Corrupted { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidState),
            CoreError::Malformed { .. }
            | CoreError::InvalidAccountId
            | CoreError::InvalidKsfParams(_)
            | CoreError::Protocol(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            CoreError::Expired { .. } => (StatusCode::GONE, ErrorCode::Expired),
            CoreError::AuthenticationFailed => {
                (StatusCode::FORBIDDEN, ErrorCode::AuthenticationFailed)
            }
            CoreError::AlreadyRegistered => (StatusCode::CONFLICT, ErrorCode::AlreadyRegistered),
            CoreError::StaleProof => (StatusCode::CONFLICT, ErrorCode::StaleProof),
            CoreError::StaleState => (StatusCode::CONFLICT, ErrorCode::StaleState),
            CoreError::Locked => (StatusCode::LOCKED, ErrorCode::Locked),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        };
        Self::new(status, code, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(api::ErrorBody {
                error: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s (413 for oversized bodies, 400 otherwise).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, ErrorCode::PayloadTooLarge, "request body too large")
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        ApiError::new(
            status,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        )
    } else {
        ApiError::bad_request(format!("invalid JSON request: {}", rejection.body_text()))
    }
}

fn decode(field: &str, what: &'static str, len: Option<usize>) -> Result<Vec<u8>, ApiError> {
    let bytes = b64_decode(field, what)
        .map_err(|_| ApiError::bad_request(format!("{what}: invalid base64url (no padding)")))?;
    if let Some(len) = len.filter(|len| bytes.len() != *len) {
        return Err(ApiError::bad_request(format!(
            "{what}: must be {len} bytes"
        )));
    }
    Ok(bytes)
}

/// Verifies the bearer token and that it is for `account` (PROTOCOL.md §8); applies the
/// per-account rate limit.
fn authorize<S>(
    st: &AppState<S>,
    headers: &HeaderMap,
    account: &str,
) -> Result<AccountId, ApiError> {
    authorize_fresh(st, headers, account).map(|(account, _)| account)
}

/// 401 for a valid token that is not recent enough for a destructive change (PROTOCOL.md §8).
fn token_not_recent() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenNotRecent,
        "this change needs an account token issued in the last minutes; sign in again",
    )
}

/// Like [`authorize`], also telling whether the token is recent (PROTOCOL.md §8).
fn authorize_fresh<S>(
    st: &AppState<S>,
    headers: &HeaderMap,
    account: &str,
) -> Result<(AccountId, bool), ApiError> {
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("Authorization must be a Bearer token"))?;
    let now = unix_now();
    let verified = st.verifier.verify_claims(token.trim(), now).map_err(|e| {
        tracing::info!(reason = %e, "token rejected");
        unauthorized("account token invalid or expired")
    })?;
    let recent = st.verifier.is_recent(verified.iat, now);
    let subject = verified.sub;
    if subject != account {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the account token is for another account",
        ));
    }
    let account = AccountId::new(account)?;
    if !st
        .account_limit
        .check(&account.as_str().to_owned(), unix_now())
    {
        st.metrics.rate_limited.inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many requests for this account; wait a minute",
        ));
    }
    Ok((account, recent))
}

async fn register_start<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::RegisterStartRequest>,
) -> Result<Json<api::RegisterStartResponse>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let request = decode(&req.request, "request", Some(32))?;
    let started = st
        .vault
        .register_start(&mut rand_core::OsRng, unix_now(), &account, &request)?;
    Ok(Json(api::RegisterStartResponse {
        response: b64_encode(&started.response),
        ticket: b64_encode(&started.ticket),
        signature: b64_encode(&started.signature),
        server_identity: b64_encode(st.vault.server_identity().as_bytes()),
        suite: SUITE_ID,
        record_version: RECORD_VERSION,
    }))
}

async fn register_finish<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::RegisterFinishRequest>,
) -> Result<Json<api::RegisterFinishResponse>, ApiError> {
    let (account, recent) = authorize_fresh(&st, &headers, &account)?;
    let ticket = decode(&req.ticket, "ticket", None)?;
    let upload = decode(&req.upload, "upload", Some(192))?;
    let wrapped = decode(&req.wrapped_key, "wrapped_key", Some(72))?;
    let proof = req
        .proof
        .as_deref()
        .map(|p| decode(p, "proof", None))
        .transpose()?;
    let binding = req
        .binding
        .as_deref()
        .map(|b| decode(b, "binding", Some(chatvault_vault_core::BINDING_LEN)))
        .transpose()?;
    let now = unix_now();
    let state = st.store.load(&account).await.map_err(ApiError::store)?;
    // Replacing a live record (change of password) needs a recent token (PROTOCOL.md §8).
    if matches!(state, AccountState::Registered { .. }) && !recent && req.proof.is_some() {
        return Err(token_not_recent());
    }
    let new = st.vault.register_finish(
        &mut rand_core::OsRng,
        now,
        &account,
        &state,
        RegistrationFinish {
            ticket: &ticket,
            upload: &upload,
            wrapped_key: &wrapped,
            ksf: req.ksf,
            proof: proof.as_deref(),
            binding: binding.as_deref(),
        },
        st.settings.max_attempts,
    )?;
    if !st
        .store
        .write_record(&account, &new, now)
        .await
        .map_err(ApiError::store)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "the record changed concurrently; start again",
        ));
    }
    st.metrics.records_registered.inc();
    tracing::info!(account = %account, generation = new.generation, "record registered");
    Ok(Json(api::RegisterFinishResponse {
        server_identity: b64_encode(st.vault.server_identity().as_bytes()),
        max_attempts: new.counter.max_attempts,
        generation: new.generation,
    }))
}

fn locked() -> ApiError {
    CoreError::Locked.into()
}

async fn recover_start<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::RecoverStartRequest>,
) -> Result<Json<api::RecoverStartResponse>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let ke1 = decode(&req.ke1, "ke1", Some(96))?;
    Vault::validate_ke1(&ke1)?;
    let max_default = st.settings.max_attempts;
    // A few rounds: the row may change between the load and the conditional update.
    for _ in 0..5 {
        let now = unix_now();
        let state = st.store.load(&account).await.map_err(ApiError::store)?;
        let started = match state {
            AccountState::Destroyed { .. } => return Err(locked()),
            AccountState::NoRecord { .. } => {
                st.metrics.recover_starts.inc();
                st.vault.recover_start(
                    &mut rand_core::OsRng,
                    now,
                    &account,
                    None,
                    &ke1,
                    max_default,
                )?
            }
            AccountState::Registered {
                generation,
                sealed,
                counter,
            } => {
                let record = st
                    .vault
                    .open_record(&account, generation, &sealed, &counter)
                    .map_err(ApiError::record)?;
                // PROTOCOL.md §6.1: count durably first; only then compute and return KE2.
                match st
                    .store
                    .count_guess(&account, generation, now)
                    .await
                    .map_err(ApiError::store)?
                {
                    Some(counted) => {
                        st.metrics.recover_starts.inc();
                        tracing::info!(account = %account, attempts = counted.attempts,
                            max = counted.max_attempts, "guess counted");
                        st.vault.recover_start(
                            &mut rand_core::OsRng,
                            now,
                            &account,
                            Some((&record, &counted)),
                            &ke1,
                            max_default,
                        )?
                    }
                    None => {
                        // Not counted: exhausted (destroy it now, PROTOCOL.md §6.4), or the row
                        // changed meanwhile (reload and decide again).
                        if st
                            .store
                            .destroy_exhausted(&account, generation, now)
                            .await
                            .map_err(ApiError::store)?
                        {
                            st.metrics.records_destroyed.inc();
                            tracing::warn!(account = %account, "guess limit reached: record destroyed");
                            return Err(locked());
                        }
                        continue;
                    }
                }
            }
        };
        return Ok(Json(api::RecoverStartResponse {
            ke2: b64_encode(&started.ke2),
            server_identity: b64_encode(st.vault.server_identity().as_bytes()),
            state: b64_encode(&started.state),
            attempts_left: started.attempts_left,
            ksf: started.ksf,
            suite: SUITE_ID,
            record_version: RECORD_VERSION,
        }));
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "the record changed concurrently; start again",
    ))
}

async fn recover_finish<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::RecoverFinishRequest>,
) -> Result<Json<api::RecoverFinishResponse>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let blob = decode(&req.state, "state", None)?;
    let ke3 = decode(&req.ke3, "ke3", Some(64))?;
    let now = unix_now();
    let login = st.vault.open_login_state(now, &account, &blob)?;
    let (generation, seq) = (login.generation, login.guess_seq);
    // The KE3 is checked first (CPU only); a valid one then resets the counter and reads the
    // record in one atomic statement. Any other outcome is explained from a load, with the same
    // answers and metrics as loading first (PROTOCOL.md §6.3).
    let session = match login.finish(&account, &ke3) {
        Ok(session) => session,
        Err(e) => {
            return Err(
                match st.store.load(&account).await.map_err(ApiError::store)? {
                    AccountState::Destroyed { .. } => locked(),
                    AccountState::Registered {
                        generation: current,
                        ..
                    } if current != generation => CoreError::StaleState.into(),
                    _ => {
                        st.metrics.ke3_failed.inc();
                        e.into()
                    }
                },
            );
        }
    };
    let Some((sealed, counter)) = st
        .store
        .record_success_returning(&account, generation, seq, now)
        .await
        .map_err(ApiError::store)?
    else {
        // Not applied: destroyed, deleted/reset, another generation, or a replayed/superseded
        // state.
        return Err(
            match st.store.load(&account).await.map_err(ApiError::store)? {
                AccountState::Destroyed { .. } => locked(),
                _ => CoreError::StaleState.into(),
            },
        );
    };
    let record = st
        .vault
        .open_record(&account, generation, &sealed, &counter)
        .map_err(ApiError::record)?;
    let (proof, proof_expires_at) =
        st.vault
            .issue_proof(&mut rand_core::OsRng, now, &account, generation, &session);
    let release = st.vault.seal_release(
        &mut rand_core::OsRng,
        &account,
        &session,
        &record.wrapped_key,
        &proof,
    );
    st.metrics.recoveries_succeeded.inc();
    tracing::info!(account = %account, "recovery succeeded");
    Ok(Json(api::RecoverFinishResponse {
        release: b64_encode(&release),
        proof_expires_at,
    }))
}

async fn delete_record<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::DeleteRequest>,
) -> Result<StatusCode, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let proof = decode(&req.proof, "proof", None)?;
    let now = unix_now();
    let generation = match st.store.load(&account).await.map_err(ApiError::store)? {
        AccountState::Registered { generation, .. } => generation,
        AccountState::Destroyed { .. } => return Err(locked()),
        AccountState::NoRecord { .. } => return Err(CoreError::StaleProof.into()),
    };
    st.vault.check_proof(now, &account, &proof, generation)?;
    if !st
        .store
        .remove(&account, Some(generation), now)
        .await
        .map_err(ApiError::store)?
    {
        return Err(CoreError::StaleProof.into());
    }
    tracing::info!(account = %account, "record deleted by its owner");
    Ok(StatusCode::NO_CONTENT)
}

async fn reset<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (account, recent) = authorize_fresh(&st, &headers, &account)?;
    // Erasing a record without a password needs a recent token (PROTOCOL.md §8, §9).
    if !recent {
        return Err(token_not_recent());
    }
    st.store
        .remove(&account, None, unix_now())
        .await
        .map_err(ApiError::store)?;
    tracing::warn!(account = %account, "record reset (forgot password): old backup key erased");
    Ok(StatusCode::NO_CONTENT)
}

/// Upper bound of the base64 text of a [`chatvault_vault_core::MAX_COMMITMENT_LEN`]-byte
/// commitment: longer strings are refused before decoding.
const MAX_COMMITMENT_B64_LEN: usize = chatvault_vault_core::MAX_COMMITMENT_LEN.div_ceil(3) * 4;

/// `PUT …/commitment` without a live record: 409, the state of the account conflicts with the
/// request (a 404 would read as "no such endpoint").
fn not_registered() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::NotRegistered,
        "no backup key is registered for this account",
    )
}

/// `PUT /v1/accounts/{account}/commitment` (PROTOCOL.md §9.1): compare-and-set of the rollback
/// commitment. Never logs the commitment bytes.
async fn put_commitment<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::PutCommitmentRequest>,
) -> Result<Response, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    if req.commitment.len() > MAX_COMMITMENT_B64_LEN {
        return Err(ApiError::bad_request("commitment: must be 1 to 512 bytes"));
    }
    let blob = b64std_decode(&req.commitment, "commitment").map_err(|_| {
        ApiError::bad_request("commitment: invalid base64 (standard alphabet, with padding)")
    })?;
    chatvault_vault_core::validate_commitment(req.seq, &blob)?;
    let outcome = match st.store.put_commitment(&account, req.seq, &blob).await {
        Ok(outcome) => outcome,
        Err(crate::Error::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "the record changed concurrently; start again",
            ));
        }
        Err(e) => return Err(ApiError::store(e)),
    };
    match outcome {
        CommitmentWrite::Stored => {
            st.metrics.commitments_stored.inc();
            tracing::info!(account = %account, seq = req.seq, len = blob.len(), "commitment stored");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        CommitmentWrite::Stale { current_seq } => {
            st.metrics.commitments_stale.inc();
            tracing::info!(account = %account, seq = req.seq, current_seq,
                "commitment refused: sequence number not higher");
            Ok((
                StatusCode::CONFLICT,
                Json(api::CommitmentConflict {
                    error: ErrorCode::StaleCommitment,
                    message: format!(
                        "a commitment with sequence number {current_seq} is stored; the new one must be higher"
                    ),
                    current_seq,
                }),
            )
                .into_response())
        }
        CommitmentWrite::NoRecord => Err(not_registered()),
    }
}

/// `GET /v1/accounts/{account}/commitment` (PROTOCOL.md §9.1).
async fn get_commitment<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Result<Json<api::CommitmentResponse>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    match st
        .store
        .get_commitment(&account)
        .await
        .map_err(ApiError::store)?
    {
        Some((seq, blob)) => Ok(Json(api::CommitmentResponse {
            seq,
            commitment: b64std_encode(&blob),
        })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoCommitment,
            "no rollback commitment is stored for this account (or no backup key is registered)",
        )),
    }
}

/// How long a `/healthz` database ping answers for all callers.
const HEALTH_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /healthz`: pings the database at most once per [`HEALTH_CACHE`]; concurrent callers wait
/// for the one ping in flight and share its result, so the endpoint cannot be used to load the
/// database.
async fn healthz<S: Store>(State(st): State<Arc<AppState<S>>>) -> Response {
    let mut last = st.health.lock().await;
    let ok = match *last {
        Some((at, ok)) if at.elapsed() < HEALTH_CACHE => ok,
        _ => {
            st.metrics.health_pings.inc();
            let ok = match st.store.ping().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "health check: database unreachable");
                    false
                }
            };
            *last = Some((std::time::Instant::now(), ok));
            ok
        }
    };
    drop(last);
    if ok {
        "ok\n".into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the vault's database is unavailable; try again later",
        )
        .into_response()
    }
}

async fn metrics<S: Store>(State(st): State<Arc<AppState<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

/// Counts requests by route and status; applies the per-IP limit to `/v1`.
async fn track<S: Store>(State(st): State<Arc<AppState<S>>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let response =
        if route.starts_with("/v1/") && ip.is_some_and(|ip| !st.ip_limit.check(&ip, unix_now())) {
            st.metrics.rate_limited.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many requests from this address; wait a minute",
            )
            .into_response()
        } else {
            next.run(req).await
        };
    st.metrics.observe(&route, response.status().as_u16());
    response
}

/// Gives every error answer produced outside the handlers (the body-size limit's 413, the
/// timeout's 408, the router's 405) the JSON error shape of PROTOCOL.md §9, keeping its status
/// and headers such as `Allow`.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "request body too large"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this endpoint does not support the method",
        ),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::BadRequest, "bad request"),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut fixed = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        fixed.headers_mut().insert(name.clone(), value.clone());
    }
    fixed
}

/// The complete router with body limits, timeouts, tracing and metrics.
pub fn router<S: Store>(state: Arc<AppState<S>>) -> Router {
    let timeout = state.settings.request_timeout;
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .route(
            "/v1/accounts/{account}/register/start",
            post(register_start::<S>),
        )
        .route(
            "/v1/accounts/{account}/register/finish",
            post(register_finish::<S>),
        )
        .route(
            "/v1/accounts/{account}/recover/start",
            post(recover_start::<S>),
        )
        .route(
            "/v1/accounts/{account}/recover/finish",
            post(recover_finish::<S>),
        )
        .route("/v1/accounts/{account}/delete", post(delete_record::<S>))
        .route("/v1/accounts/{account}", axum::routing::delete(reset::<S>))
        .route(
            "/v1/accounts/{account}/commitment",
            get(get_commitment::<S>).put(put_commitment::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/register1",
            post(realm::register1::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/register2",
            post(realm::register2::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/recover1",
            post(realm::recover1::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/recover2",
            post(realm::recover2::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/recover3",
            post(realm::recover3::<S>),
        )
        .route(
            "/v1/realm/accounts/{account}/delete",
            post(realm::delete::<S>),
        )
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track::<S>))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::map_response(json_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_error_schema_lists_every_error_code() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let listed: Vec<&str> =
            doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
        for code in ErrorCode::ALL {
            assert!(listed.contains(&code.as_str()), "{code} missing");
        }
    }

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
