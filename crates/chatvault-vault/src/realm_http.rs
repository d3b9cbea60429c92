//! Threshold realm endpoints (PROTOCOL.md §13.8): this vault process acting as one realm of a
//! t-of-n threshold vault. The protocol steps are `chatvault_threshold::RealmRecord`; this module
//! moves bytes, checks tokens (the same account-token rules as the single-vault API) and runs the
//! guess counter on the same atomic store operations:
//!
//! - `recover2` counts the guess with [`Store::count_guess`] **before** evaluating, and never
//!   returns an evaluation whose guess is not durably counted;
//! - `recover3` with the right unlock tag resets the counter ([`Store::record_success`]);
//! - an exhausted record is destroyed ([`Store::destroy_exhausted`]) on the next request, or by
//!   the sweeper once no `recover3` can follow.
//!
//! Records are sealed with the realm's sealing key (derived from the key file) and stored in the
//! same table as single-vault records; one account uses one mode per vault.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chatvault_threshold::{
    self as th, RealmKeys, RealmRecord, Recover1Response, Recover2Request, Recover2Response,
    Recover3Request, Recover3Response, Register1Response, Register2Request, Register2Response,
};
use chatvault_vault_core::api::ErrorCode;
use chatvault_vault_core::{AccountId, AccountState, GuessCounter, NewRecord};

use super::{ApiError, ApiJson, AppState, authorize, authorize_fresh, locked, token_not_recent};
use crate::store::Store;
use crate::unix_now;

/// The request body of an endpoint that takes none (clients send `{}`), read and ignored. A body
/// the handler never read is drained by hyper only if it already arrived with the headers;
/// otherwise hyper closes the connection after the response, without saying so, and a client
/// that sends its next request on it at once finds the connection gone ("peer disconnected").
type ReadBody = axum::body::Bytes;

impl From<th::Error> for ApiError {
    fn from(e: th::Error) -> Self {
        let msg = e.to_string();
        let (status, code) = match &e {
            th::Error::Malformed { .. }
            | th::Error::InvalidConfig(_)
            | th::Error::Core(_)
            | th::Error::UnsupportedVersion { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            }
            th::Error::VersionMismatch => (StatusCode::CONFLICT, ErrorCode::StaleState),
            th::Error::BadUnlockTag { .. } => {
                (StatusCode::FORBIDDEN, ErrorCode::AuthenticationFailed)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        };
        ApiError::new(status, code, msg)
    }
}

fn realm_keys<S>(st: &AppState<S>) -> Result<&RealmKeys, ApiError> {
    st.realm.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this vault does not serve the threshold realm API",
        )
    })
}

fn not_registered() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::NotRegistered,
        "no threshold registration is stored for this account at this realm",
    )
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "the record changed concurrently; start again",
    )
}

/// Opens a stored record; a record of the single-vault mode (or one that does not open) is the
/// server's problem, reported without detail.
fn open(
    keys: &RealmKeys,
    account: &AccountId,
    generation: u64,
    sealed: &[u8],
) -> Result<RealmRecord, ApiError> {
    keys.open_record(account, generation, sealed).map_err(|e| {
        tracing::error!(error = %e, "cannot open a stored realm record");
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "this account's record at this vault is not a threshold registration \
             (single-vault mode?) or is corrupted",
        )
    })
}

/// A live record, opened; `Err(locked)` for destroyed ones, after destroying an exhausted one.
async fn live<S: Store>(
    st: &AppState<S>,
    keys: &RealmKeys,
    account: &AccountId,
) -> Result<(u64, RealmRecord, GuessCounter), ApiError> {
    match st.store.load(account).await.map_err(ApiError::store)? {
        AccountState::NoRecord { .. } => Err(not_registered()),
        AccountState::Destroyed { .. } => Err(locked()),
        AccountState::Registered {
            generation,
            sealed,
            counter,
        } => {
            if counter.is_exhausted() {
                destroy(st, account, generation).await?;
                return Err(locked());
            }
            Ok((
                generation,
                open(keys, account, generation, &sealed)?,
                counter,
            ))
        }
    }
}

async fn destroy<S: Store>(
    st: &AppState<S>,
    account: &AccountId,
    generation: u64,
) -> Result<(), ApiError> {
    if st
        .store
        .destroy_exhausted(account, generation, unix_now())
        .await
        .map_err(ApiError::store)?
    {
        st.metrics.records_destroyed.inc();
        tracing::warn!(account = %account, "realm guess limit reached: record destroyed");
    }
    Ok(())
}

/// `POST /v1/realm/accounts/{account}/register1`: availability and the realm id.
pub(super) async fn register1<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    _body: ReadBody,
) -> Result<Json<Register1Response>, ApiError> {
    authorize(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    Ok(Json(Register1Response {
        realm_id: keys.realm_id(),
    }))
}

/// `POST /v1/realm/accounts/{account}/register2`: stores (or replaces, with a recent token) the
/// account's registration at this realm.
pub(super) async fn register2<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Register2Request>,
) -> Result<Json<Register2Response>, ApiError> {
    let (account, recent) = authorize_fresh(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    if req.max_attempts > st.settings.max_attempts {
        return Err(ApiError::bad_request(format!(
            "max_attempts: this realm allows at most {}",
            st.settings.max_attempts
        )));
    }
    let record = RealmRecord::register2(&keys.realm_id(), req)?;
    let now = unix_now();
    let state = st.store.load(&account).await.map_err(ApiError::store)?;
    // Replacing a live record (new password, new key) needs a recent token (PROTOCOL.md §8).
    if let AccountState::Registered {
        generation, sealed, ..
    } = &state
    {
        if !recent {
            return Err(token_not_recent());
        }
        // Never replace a single-vault (OPAQUE) record through the realm API.
        open(keys, &account, *generation, sealed)?;
    }
    let expected_generation = state.generation();
    let generation = expected_generation + 1;
    let new = NewRecord {
        expected_generation,
        generation,
        sealed: keys.seal_record(&mut rand_core::OsRng, &account, generation, &record),
        counter: GuessCounter::new(record.max_attempts()),
    };
    if !st
        .store
        .write_record(&account, &new, now)
        .await
        .map_err(ApiError::store)?
    {
        return Err(conflict());
    }
    st.metrics.records_registered.inc();
    tracing::info!(account = %account, generation, "threshold registration stored");
    Ok(Json(Register2Response {
        receipt: keys.register_receipt(&account, record.version(), record.share_index()),
    }))
}

/// `POST /v1/realm/accounts/{account}/recover1`: which registration this realm holds.
pub(super) async fn recover1<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    _body: ReadBody,
) -> Result<Json<Recover1Response>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    let (_, record, _) = live(&st, keys, &account).await?;
    Ok(Json(record.recover1()))
}

/// `POST /v1/realm/accounts/{account}/recover2`: counts one guess durably, then evaluates and
/// proves (PROTOCOL.md §13.8).
pub(super) async fn recover2<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Recover2Request>,
) -> Result<Json<Recover2Response>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    for _ in 0..5 {
        let (generation, record, _) = live(&st, keys, &account).await?;
        // A malformed request or one for another registration costs no guess.
        record.check_recover2(&req)?;
        let counted = st
            .store
            .count_guess(&account, generation, unix_now())
            .await
            .map_err(ApiError::store)?;
        let Some(counted) = counted else {
            // Exhausted meanwhile (destroy it on the next round) or re-registered: decide again.
            continue;
        };
        st.metrics.recover_starts.inc();
        tracing::info!(account = %account, attempts = counted.attempts,
            max = counted.max_attempts, "realm guess counted");
        let resp = record.recover2(&mut rand_core::OsRng, keys, &account, &counted, &req)?;
        return Ok(Json(resp));
    }
    Err(conflict())
}

/// `POST /v1/realm/accounts/{account}/recover3`: releases this realm's share for the right
/// unlock tag and resets the guess counter.
pub(super) async fn recover3<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Recover3Request>,
) -> Result<Json<Recover3Response>, ApiError> {
    let account = authorize(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    // Not `live()`: the last allowed guess may still be followed by its recover3.
    let (generation, sealed, counter) =
        match st.store.load(&account).await.map_err(ApiError::store)? {
            AccountState::NoRecord { .. } => return Err(not_registered()),
            AccountState::Destroyed { .. } => return Err(locked()),
            AccountState::Registered {
                generation,
                sealed,
                counter,
            } => (generation, sealed, counter),
        };
    let record = open(keys, &account, generation, &sealed)?;
    match record.recover3(&counter, &req) {
        Ok(release) => {
            if counter.attempts > 0 {
                // A lost race (another recover3 reset it first) changes nothing for this client.
                st.store
                    .record_success(&account, generation, counter.guess_seq, unix_now())
                    .await
                    .map_err(ApiError::store)?;
            }
            st.metrics.recoveries_succeeded.inc();
            tracing::info!(account = %account, "threshold recovery released");
            Ok(Json(release))
        }
        Err(e @ th::Error::BadUnlockTag { .. }) => {
            st.metrics.ke3_failed.inc();
            if counter.is_exhausted() {
                destroy(&st, &account, generation).await?;
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/realm/accounts/{account}/delete`: erases the account's registration at this realm
/// (recent token required, like a reset).
pub(super) async fn delete<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    _body: ReadBody,
) -> Result<StatusCode, ApiError> {
    let (account, recent) = authorize_fresh(&st, &headers, &account)?;
    let keys = realm_keys(&st)?;
    if !recent {
        return Err(token_not_recent());
    }
    let generation = match st.store.load(&account).await.map_err(ApiError::store)? {
        AccountState::NoRecord { .. } => return Ok(StatusCode::NO_CONTENT),
        AccountState::Destroyed { generation, .. } => generation,
        AccountState::Registered {
            generation, sealed, ..
        } => {
            // Never erase a single-vault (OPAQUE) record through the realm API.
            open(keys, &account, generation, &sealed)?;
            generation
        }
    };
    if !st
        .store
        .remove(&account, Some(generation), unix_now())
        .await
        .map_err(ApiError::store)?
    {
        return Err(conflict());
    }
    tracing::warn!(account = %account, "threshold registration deleted at this realm");
    Ok(StatusCode::NO_CONTENT)
}
