//! Who may use the admin port: a bearer token for mutating endpoints, and
//! optionally one for reads.
//!
//! Tokens are compared in constant time (`subtle`), so the time a wrong
//! guess takes says nothing about how much of it was right; only a
//! token's length can show through, and tokens are at least
//! [`MIN_TOKEN_LEN`](crate::config::AdminConfig) bytes of the operator's
//! choosing. A reload replaces the tokens ([`Auth::set`]), so a token is
//! rotated without a restart.

use crate::config::AdminTokens;
use arc_swap::ArcSwap;
use http::{header, Request, StatusCode};
use subtle::ConstantTimeEq;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read figures: `/status`, `/metrics`, `/`, `/history.json`.
    Read,
    /// Change something: `POST /reload`.
    Write,
}

/// Why a request was not let in: the status and the message to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 (no or wrong token) or 403 (no token configured at all).
    pub status: StatusCode,
    /// What to do about it.
    pub message: &'static str,
}

/// The tokens now.
#[derive(Debug, Default)]
pub struct Auth {
    tokens: ArcSwap<AdminTokens>,
}

/// The message of a mutating request while no admin token is configured.
pub const NO_TOKEN: &str = "mutating admin endpoints are disabled: no admin token is configured.\n\
To enable them, put a token of at least 16 visible characters in a file and name it in the config as\n\
  [admin]\n  token_file = \"/path/to/token\"\n\
(or set FLOODWALL_ADMIN_TOKEN in floodwall's environment), then send\n\
  Authorization: Bearer <token>\n";

const WRONG_TOKEN: &str = "a valid token is required: send Authorization: Bearer <token>\n";

impl Auth {
    /// Auth with `tokens`.
    pub fn new(tokens: AdminTokens) -> Self {
        Self {
            tokens: ArcSwap::from_pointee(tokens),
        }
    }

    /// Replaces the tokens (a config reload).
    pub fn set(&self, tokens: AdminTokens) {
        self.tokens.store(std::sync::Arc::new(tokens));
    }

    /// Whether a read token is configured.
    pub fn reads_protected(&self) -> bool {
        self.tokens.load().read.is_some()
    }

    /// Lets `req` in for `access`, or says why not. Writes need the admin
    /// token; reads need the read token or the admin token when a read
    /// token is configured, and nothing otherwise.
    pub fn check<B>(&self, req: &Request<B>, access: Access) -> Result<(), Denied> {
        let tokens = self.tokens.load();
        let presented = bearer(req);
        let matches =
            |want: &Option<String>| matches!((want, presented), (Some(w), Some(p)) if eq(w, p));
        match access {
            Access::Write if tokens.write.is_none() => Err(Denied {
                status: StatusCode::FORBIDDEN,
                message: NO_TOKEN,
            }),
            Access::Write if matches(&tokens.write) => Ok(()),
            Access::Read if tokens.read.is_none() => Ok(()),
            Access::Read if matches(&tokens.read) || matches(&tokens.write) => Ok(()),
            _ => Err(Denied {
                status: StatusCode::UNAUTHORIZED,
                message: WRONG_TOKEN,
            }),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
fn bearer<B>(req: &Request<B>) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| v[7..].trim_ascii())
}

/// Constant-time for equal lengths; unequal lengths are refused at once.
fn eq(want: &str, presented: &[u8]) -> bool {
    want.as_bytes().ct_eq(presented).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/reload");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn writes_need_the_admin_token_and_reads_the_read_token_if_set() {
        let none = Auth::new(AdminTokens::default());
        let denied = none.check(&req(None), Access::Write).unwrap_err();
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert!(denied.message.contains("token_file"), "{}", denied.message);
        assert!(none.check(&req(None), Access::Read).is_ok());

        let w = "w".repeat(20);
        let r = "r".repeat(20);
        let auth = Auth::new(AdminTokens {
            write: Some(w.clone()),
            read: Some(r.clone()),
        });
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(auth.check(&req(Some(&bearer(&w))), Access::Write).is_ok());
        assert!(auth
            .check(&req(Some(&format!("bearer  {w} "))), Access::Write)
            .is_ok());
        for bad in [
            None,
            Some(bearer(&r)),
            Some(bearer(&w[1..])),
            Some(w.clone()),
        ] {
            let denied = auth.check(&req(bad.as_deref()), Access::Write).unwrap_err();
            assert_eq!(denied.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        assert!(auth.check(&req(Some(&bearer(&r))), Access::Read).is_ok());
        assert!(auth.check(&req(Some(&bearer(&w))), Access::Read).is_ok());
        assert!(auth.check(&req(None), Access::Read).is_err());
        auth.set(AdminTokens::default());
        assert!(auth.check(&req(None), Access::Read).is_ok());
    }
}
