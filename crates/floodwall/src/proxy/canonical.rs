//! One canonical request: the host and path a request is routed on are the
//! ones it is forwarded with.
//!
//! [`canonicalize`] runs before the router and writes its result back into
//! the request: the request-target becomes origin-form with the normalised
//! path (query untouched), and `Host` holds the one canonical host. The
//! router then reads only `Host` and the path, and `forward.rs` sends both
//! on unchanged, so there is no second source a client could make disagree.
//!
//! - **Host** (RFC 9112 §3.2, §3.2.2; RFC 9113 §8.3.1): the absolute-form
//!   URI's authority (in HTTP/2, `:authority`, which hyper puts in the URI)
//!   if present, else the `Host` header. More than one `Host` line is
//!   refused, and so is HTTP/1.1 without one. The value is lower-cased, a
//!   trailing dot dropped, an empty port dropped and the port written in
//!   decimal; userinfo, empty labels or any byte outside letters, digits,
//!   `-`, `.`, `_` (or, in brackets, an IPv6 literal) are refused.
//! - **Path**: see [`path`]. Always on; there is no option to turn it off.
//!
//! Everything here but [`canonicalize`] is pure, and none of it allocates
//! for a request that is already canonical.

use http::header::{HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use std::borrow::Cow;

/// Why a request has no canonical form (each is a 400; see `respond.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// HTTP/1.1 without a `Host` header.
    MissingHost,
    /// More than one `Host` header line.
    DuplicateHost,
    /// A host with userinfo, an empty label, a bad port or a byte outside
    /// the allowed set.
    InvalidHost,
    /// A path not starting with `/` (`*`, authority-form) or with a `%`
    /// not followed by two hex digits.
    InvalidPath,
}

/// Makes `req` canonical in place, or says why it cannot be.
pub fn canonicalize<B>(req: &mut Request<B>) -> Result<(), Malformed> {
    let mut lines = req.headers().get_all(HOST).iter();
    let header = lines.next();
    if lines.next().is_some() {
        return Err(Malformed::DuplicateHost);
    }
    if header.is_none() && req.version() == Version::HTTP_11 {
        return Err(Malformed::MissingHost);
    }
    // The URI's authority wins; the Host header is then ignored (RFC 9112
    // §3.2.2), whatever it says.
    let from_uri = req.uri().authority().is_some();
    let raw = match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => header.map(HeaderValue::as_bytes),
    };
    let host: Option<Option<HeaderValue>> = match raw.map(authority).transpose()? {
        // Already what the Host header says: leave it.
        Some(Some(Cow::Borrowed(_))) if !from_uri => None,
        Some(Some(h)) => Some(Some(
            HeaderValue::from_str(&h).map_err(|_| Malformed::InvalidHost)?,
        )),
        // No host at all (an empty Host, or HTTP/1.0 or h2 without one).
        Some(None) | None => Some(None),
    };

    let origin_form = req.uri().scheme().is_none() && !from_uri;
    let pq = match path(req.uri().path())? {
        Cow::Borrowed(_) if origin_form => None,
        // The same path, without scheme and authority: shared, not copied.
        Cow::Borrowed(_) => Some(match req.uri().path_and_query() {
            Some(pq) if pq.as_str() != "/" => pq.clone(),
            _ => PathAndQuery::from_static("/"),
        }),
        Cow::Owned(p) => {
            let p = match req.uri().query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            Some(PathAndQuery::try_from(p).map_err(|_| Malformed::InvalidPath)?)
        }
    };

    match host {
        None => {}
        Some(Some(v)) => {
            req.headers_mut().insert(HOST, v);
        }
        Some(None) => {
            req.headers_mut().remove(HOST);
        }
    }
    if let Some(pq) = pq {
        *req.uri_mut() = Uri::from(pq);
    }
    Ok(())
}

/// The host name of a canonical authority (as [`authority`] returns it):
/// without its port, brackets kept for an IPv6 literal.
pub fn host_name(authority: &str) -> &str {
    match authority.rfind([':', ']']) {
        Some(i) if authority.as_bytes()[i] == b':' => &authority[..i],
        _ => authority,
    }
}

/// The canonical form of a Host value or URI authority: `Ok(None)` when it
/// is empty (a request without a host), borrowed when it is canonical
/// already.
pub fn authority(raw: &[u8]) -> Result<Option<Cow<'_, str>>, Malformed> {
    let bad = Malformed::InvalidHost;
    if raw.is_empty() {
        return Ok(None);
    }
    let s = std::str::from_utf8(raw).map_err(|_| bad)?;
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(bad)?;
        let ipv6 = !inside.is_empty()
            && inside.contains(':')
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return Err(bad);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(bad)?),
        };
        (&s[..inside.len() + 2], port)
    } else {
        match s.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        }
    };
    // One trailing dot is the same name (a fully qualified one).
    let bare = if name.starts_with('[') {
        name
    } else {
        let bare = name.strip_suffix('.').unwrap_or(name);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !bare.split('.').all(label_ok) {
            return Err(bad);
        }
        bare
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad)?)
        }
        Some(_) => return Err(bad),
    };
    let port_text = &s[name.len()..];
    let unchanged = bare.len() == name.len()
        && !bare.bytes().any(|b| b.is_ascii_uppercase())
        && match port {
            None => port_text.is_empty(),
            // Decimal as written: no leading zero.
            Some(_) => !(port_text.len() > 2 && port_text.as_bytes()[1] == b'0'),
        };
    if unchanged {
        return Ok(Some(Cow::Borrowed(s)));
    }
    let mut out = bare.to_ascii_lowercase();
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(Some(Cow::Owned(out)))
}

/// Unreserved characters (RFC 3986 §2.3): a percent-encoding of one of
/// these means the same as the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `p` is canonical already: no `%` (an encoding to check), no
/// empty segment but the last (`//`), no `.` or `..` segment.
fn is_canonical(p: &str) -> bool {
    if p.contains('%') {
        return false;
    }
    let mut segments = p[1..].split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// The normalised path, the one that is routed and forwarded. In order:
///
/// 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///    decoded, and every other encoding is kept with upper-case hex
///    (RFC 3986 §6.2.2.1-2): `%72` is `r`, `%2f` stays encoded as `%2F`, so
///    an encoded slash never becomes a separator; a `%` not followed by two
///    hex digits is [`Malformed::InvalidPath`];
/// 2. runs of `/` are merged into one (Envoy's `merge_slashes`);
/// 3. `.` and `..` segments are resolved (RFC 3986 §5.2.4, Envoy's
///    `normalize_path`); a `..` at the root stays at the root, as the RFC's
///    algorithm does: `/../a` is `/a`.
///
/// A path not starting with `/` (asterisk-form `*`, or the empty path of
/// authority-form) is [`Malformed::InvalidPath`]. A backslash is an
/// ordinary character, not a separator, and bytes other than `%` are kept
/// as they are.
pub fn path(raw: &str) -> Result<Cow<'_, str>, Malformed> {
    if !raw.starts_with('/') {
        return Err(Malformed::InvalidPath);
    }
    if is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = decoded[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        match s {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
        // `/a/`, `/a/.` and `/a/b/..` all name a directory: `/a/`.
        trailing_slash = last && matches!(s, "" | "." | "..");
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Step 1 of [`path`]: decode unreserved encodings, upper-case the rest.
fn decode_unreserved(raw: &str) -> Result<String, Malformed> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (hi, lo) = match (bytes.get(i + 1).copied(), bytes.get(i + 2).copied()) {
            (Some(h), Some(l)) => (hex(h), hex(l)),
            _ => (None, None),
        };
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(Malformed::InvalidPath);
        };
        let b = hi << 4 | lo;
        if is_unreserved(b) {
            out.push(b);
        } else {
            out.push(b'%');
            out.extend(bytes[i + 1..i + 3].iter().map(u8::to_ascii_uppercase));
        }
        i += 3;
    }
    // Only ASCII was rewritten, so this is still UTF-8.
    String::from_utf8(out).map_err(|_| Malformed::InvalidPath)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> Result<String, Malformed> {
        path(p).map(Cow::into_owned)
    }

    #[test]
    fn paths_normalise() {
        let cases = [
            ("/reports", "/reports"),
            ("//reports", "/reports"),
            ("/./reports", "/reports"),
            ("/%72eports", "/reports"),
            ("/x/../reports", "/reports"),
            ("/%2e%2E/reports", "/reports"),
            ("/x/%2e%2e/reports", "/reports"),
            ("/x//../reports", "/reports"),
            ("/../../reports", "/reports"),
            ("/..", "/"),
            ("/.", "/"),
            ("//", "/"),
            ("/", "/"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a//b///c", "/a/b/c"),
            ("/a/%2fb", "/a/%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/%7e%41%5F%2d", "/~A_-"),
            ("/%25", "/%25"),
            ("/%2525", "/%2525"),
            ("/caf\u{e9}/./x", "/caf\u{e9}/x"),
            ("/a\\..\\b", "/a\\..\\b"),
            ("/...", "/..."),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/reports", "/a/b/", "/a.b/c..d/.e"] {
            assert!(matches!(path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["*", "", "reports", "/%", "/%2", "/%zz", "/a%g0", "/%%41"] {
            assert_eq!(path(p), Err(Malformed::InvalidPath), "{p:?}");
        }
    }

    #[test]
    fn authorities_normalise() {
        let cases = [
            ("api.test", "api.test"),
            ("API.Test", "api.test"),
            ("api.test.", "api.test"),
            ("api.test:8080", "api.test:8080"),
            ("API.test.:080", "api.test:80"),
            ("api.test:", "api.test"),
            ("127.0.0.1:9", "127.0.0.1:9"),
            ("[::1]", "[::1]"),
            ("[::1]:80", "[::1]:80"),
            ("[FE80::1]", "[fe80::1]"),
            ("my_host-1", "my_host-1"),
        ];
        for (raw, want) in cases {
            let got = authority(raw.as_bytes()).unwrap().unwrap();
            assert_eq!(got, want, "{raw}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), raw == want, "{raw}");
        }
        assert_eq!(authority(b""), Ok(None));
    }

    #[test]
    fn bad_authorities_are_refused() {
        for raw in [
            "user@api.test",
            "api..test",
            ".api.test",
            ".",
            "api.test:x",
            "api.test:65536",
            "api.test:123456",
            "a/b",
            "a b",
            "a%41",
            "[::1",
            "[]",
            "[zz::1]",
            "[::1]x",
            "a:1:2",
            "caf\u{e9}",
        ] {
            assert_eq!(
                authority(raw.as_bytes()),
                Err(Malformed::InvalidHost),
                "{raw}"
            );
        }
        assert_eq!(authority(b"\xff"), Err(Malformed::InvalidHost));
    }

    #[test]
    fn host_name_drops_the_port() {
        assert_eq!(host_name("api.test:80"), "api.test");
        assert_eq!(host_name("api.test"), "api.test");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("[::1]:80"), "[::1]");
    }

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn canonical(mut r: Request<()>) -> Result<(String, Option<String>), Malformed> {
        canonicalize(&mut r)?;
        let host = r
            .headers()
            .get(HOST)
            .map(|h| h.to_str().unwrap().to_owned());
        Ok((r.uri().to_string(), host))
    }

    #[test]
    fn one_host_one_path() {
        use Version as V;
        let ok = |uri, host: Option<&str>| Ok((String::from(uri), host.map(String::from)));
        let cases = [
            // The URI's authority wins and replaces Host.
            (
                req(V::HTTP_11, "http://API.test/x//../r?q=1", &["other"]),
                ok("/r?q=1", Some("api.test")),
            ),
            (
                req(V::HTTP_2, "http://api.test:8080/r", &["other"]),
                ok("/r", Some("api.test:8080")),
            ),
            (
                req(V::HTTP_2, "http://api.test/r", &[]),
                ok("/r", Some("api.test")),
            ),
            (
                req(V::HTTP_11, "/r", &["Api.Test."]),
                ok("/r", Some("api.test")),
            ),
            (req(V::HTTP_11, "/%72", &["a"]), ok("/r", Some("a"))),
            (req(V::HTTP_11, "/r", &[""]), ok("/r", None)),
            (req(V::HTTP_10, "/r", &[]), ok("/r", None)),
            (req(V::HTTP_11, "/r", &[]), Err(Malformed::MissingHost)),
            (
                req(V::HTTP_11, "http://a/r", &[]),
                Err(Malformed::MissingHost),
            ),
            (
                req(V::HTTP_11, "/r", &["a", "a"]),
                Err(Malformed::DuplicateHost),
            ),
            (
                req(V::HTTP_2, "http://a/r", &["a", "b"]),
                Err(Malformed::DuplicateHost),
            ),
            (req(V::HTTP_11, "/r", &["a@b"]), Err(Malformed::InvalidHost)),
            (
                req(V::HTTP_11, "http://u@a/r", &["a"]),
                Err(Malformed::InvalidHost),
            ),
            // Ignored when the URI has an authority.
            (req(V::HTTP_11, "http://a/r", &["a@b"]), ok("/r", Some("a"))),
            (req(V::HTTP_11, "*", &["a"]), Err(Malformed::InvalidPath)),
            (req(V::HTTP_11, "/%zz", &["a"]), Err(Malformed::InvalidPath)),
        ];
        for (r, want) in cases {
            let what = format!("{:?} {} {:?}", r.version(), r.uri(), r.headers());
            assert_eq!(canonical(r), want, "{what}");
        }
    }

    /// Paths built from the pieces that matter: separators, dots, encodings
    /// (good, reserved, unreserved, broken), and ordinary characters.
    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E"),
            Just("%2f"),
            Just("%2F"),
            Just("%72"),
            Just("%7E"),
            Just("%25"),
            Just("%"),
            Just("%z"),
            Just("a"),
            Just("B"),
            Just("~"),
            Just("\\"),
            Just(";"),
            Just("\u{e9}"),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn path_is_idempotent_and_rooted(p in path_strategy()) {
            if let Ok(once) = path(&p) {
                prop_assert!(once.starts_with('/'), "{once}");
                prop_assert!(!once.contains("//"), "{once}");
                prop_assert!(!once.contains("/./") && !once.contains("/../"), "{once}");
                prop_assert!(!once.ends_with("/.") && !once.ends_with("/.."), "{once}");
                let twice = path(&once).expect("a normalised path normalises");
                prop_assert_eq!(&*twice, &*once);
                prop_assert!(matches!(twice, Cow::Borrowed(_)) || once.contains('%'));
            }
        }

        #[test]
        fn path_never_panics(p in any::<String>()) {
            let slashed = format!("/{p}");
            for input in [p.as_str(), slashed.as_str()] {
                if let Ok(once) = path(input) {
                    prop_assert!(once.starts_with('/'));
                    prop_assert_eq!(&*path(&once).unwrap(), &*once);
                }
            }
        }

        #[test]
        fn encoding_an_unreserved_character_changes_nothing(p in path_strategy(), i in any::<usize>()) {
            // Percent-encode the i-th unreserved byte: the result must not change.
            // (not one of the two hex digits of an encoding).
            let b = p.as_bytes();
            let positions: Vec<usize> = (0..b.len())
                .filter(|&j| is_unreserved(b[j]))
                .filter(|&j| !b[j.saturating_sub(2)..j].contains(&b'%'))
                .collect();
            prop_assume!(!positions.is_empty());
            let j = positions[i % positions.len()];
            let encoded = format!("{}%{:02X}{}", &p[..j], p.as_bytes()[j], &p[j + 1..]);
            prop_assert_eq!(path(&p).ok(), path(&encoded).ok());
        }

        #[test]
        fn authority_never_panics_and_is_idempotent(raw in any::<Vec<u8>>()) {
            if let Ok(Some(once)) = authority(&raw) {
                let twice = authority(once.as_bytes()).unwrap().unwrap();
                prop_assert!(matches!(twice, Cow::Borrowed(_)));
                prop_assert_eq!(&*twice, &*once);
            }
        }
    }
}
