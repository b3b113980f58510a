//! The credentials of an HTTP request: the publisher key or subscriber token in `Authorization: Bearer`, or a
//! subscriber token in `?token=` (an `EventSource` cannot set headers). The checks themselves are `auth`'s.

use axum::http::{header, HeaderMap};
use herald_proto::ChannelName;

use super::query::Query;
use super::AppState;
use crate::auth::{bearer, AuthError, Claims, TokenError};
use crate::error::ApiError;

/// The `Authorization` header's text, if any.
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""))
}

/// The subscriber token of a request: `Authorization: Bearer` wins over `?token=`. An `Authorization` header of
/// another scheme is a refused token, not a missing one.
fn token<'a>(headers: &'a HeaderMap, query: &'a Query) -> Result<Option<&'a str>, AuthError> {
    match authorization(headers) {
        Some(value) => bearer(value)
            .map(Some)
            .ok_or_else(|| AuthError::Token(TokenError::Invalid("send the token as `Authorization: Bearer`".into()))),
        None => Ok(query.one("token").filter(|t| !t.is_empty())),
    }
}

/// Checks that a request may read every one of `channels`, and returns the claims of its token, if it gave one.
/// A token that is given must be valid, even where no channel needs it, so a client learns at once that its
/// token is bad.
pub fn authorize_read(
    state: &AppState,
    headers: &HeaderMap,
    query: &Query,
    channels: &[ChannelName],
) -> Result<Option<Claims>, ApiError> {
    let claims = match token(headers, query) {
        Ok(Some(token)) => Some(state.auth.verify(token)?),
        Ok(None) => None,
        Err(err) => {
            // Counted like any refused token.
            return Err(state.auth.refused(err).into());
        }
    };
    for channel in channels {
        state.auth.subscribe(claims.as_ref(), channel)?;
    }
    Ok(claims)
}
