//! Who is on the other end of a WebSocket, and which tags they may track.
//!
//! Today only development mode exists: the user id is the `user` query parameter, and any
//! tag may be tracked. Signed connection tokens slot in as another [`Authenticator`] whose
//! [`Identity`] carries the tags its token grants; the connection code asks
//! [`Identity::may_track`] for every subscribed tag and needs no other change.

use std::sync::Arc;

/// The user of a connection and what they may track.
#[derive(Clone, Debug)]
pub struct Identity {
    user: Option<Arc<str>>,
    grants: Grants,
}

/// Which tags an identity may track.
#[derive(Clone, Debug)]
enum Grants {
    /// Any tag (development mode).
    All,
}

/// Why a connection could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The `user` parameter is present but unusable.
    #[error("invalid user id: {0}")]
    InvalidUser(&'static str),
}

impl Identity {
    /// An anonymous connection: it is never the author of a change.
    pub fn anonymous() -> Identity {
        Identity {
            user: None,
            grants: Grants::All,
        }
    }

    /// A named user who may track any tag.
    pub fn user(name: &str) -> Identity {
        Identity {
            user: Some(Arc::from(name)),
            grants: Grants::All,
        }
    }

    /// The user id, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether this identity may track `tag`.
    pub fn may_track(&self, _tag: &str) -> bool {
        match self.grants {
            Grants::All => true,
        }
    }
}

/// Identifies a WebSocket from its upgrade request.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity for a request with this query string (without the `?`).
    fn authenticate(&self, query: Option<&str>) -> Result<Identity, AuthError>;
}

/// Development mode: `?user=alice` names the user; no parameter means anonymous.
pub struct DevAuthenticator;

/// The longest user id accepted, in bytes.
const MAX_USER_BYTES: usize = 256;

impl Authenticator for DevAuthenticator {
    fn authenticate(&self, query: Option<&str>) -> Result<Identity, AuthError> {
        let user = query.and_then(|q| form_pairs(q).find(|(k, _)| k == "user").map(|(_, v)| v));
        match user {
            None => Ok(Identity::anonymous()),
            Some(u) if u.is_empty() => Ok(Identity::anonymous()),
            Some(u) if u.len() > MAX_USER_BYTES => {
                Err(AuthError::InvalidUser("longer than 256 bytes"))
            }
            Some(u) => Ok(Identity::user(&u)),
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parameter_names_the_user() {
        let id = DevAuthenticator
            .authenticate(Some("x=1&user=al%C3%AFce+b"))
            .unwrap();
        assert_eq!(id.user_id(), Some("alïce b"));
    }

    #[test]
    fn no_user_parameter_is_anonymous() {
        assert_eq!(DevAuthenticator.authenticate(None).unwrap().user_id(), None);
        assert_eq!(
            DevAuthenticator
                .authenticate(Some("user="))
                .unwrap()
                .user_id(),
            None
        );
    }

    #[test]
    fn malformed_escapes_are_kept_literally() {
        let id = DevAuthenticator.authenticate(Some("user=a%2")).unwrap();
        assert_eq!(id.user_id(), Some("a%2"));
    }
}
