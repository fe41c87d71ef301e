//! Classification: which limiter, which priority class, which tenant.
//!
//! By default a request is classified as the gateway classifies it: the
//! class from `X-Priority`, the tenant from `X-Tenant-Id` (at most 128
//! visible ASCII bytes, else refused with `invalid_tenant_id`), one
//! limiter. [`Classifier`] changes any part with a closure; implement
//! [`Classify`] for anything else.

use floodwall_core::{ClassId, Limiter};
use http::{Extensions, HeaderMap, HeaderName, Method, Uri};

/// The parts of a request a classifier may read: all but the body.
#[derive(Debug, Clone, Copy)]
pub struct Head<'r> {
    /// The method.
    pub method: &'r Method,
    /// The URI.
    pub uri: &'r Uri,
    /// The headers.
    pub headers: &'r HeaderMap,
    /// The extensions (what earlier layers attached, e.g. an
    /// authenticated principal).
    pub extensions: &'r Extensions,
}

impl<'r> Head<'r> {
    /// The head of `req`.
    pub fn of<B>(req: &'r http::Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The value of `name` if present and valid UTF-8.
    pub fn header(&self, name: &HeaderName) -> Option<&'r str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A tenant id the classifier refuses (too long, or not visible ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTenant {
    _p: (),
}

impl InvalidTenant {
    /// The refusal.
    pub fn new() -> Self {
        Self { _p: () }
    }
}

impl Default for InvalidTenant {
    fn default() -> Self {
        Self::new()
    }
}

/// How an [`AdmissionLayer`](super::AdmissionLayer) classifies a request.
///
/// Called once per request, before admission, on the hot path: keep it to
/// header reads.
pub trait Classify: Send + Sync + 'static {
    /// The key of the limiter to admit through, among those given to the
    /// layer with [`AdmissionLayer::route`](super::AdmissionLayer::route);
    /// `None` (or an unknown key) is the layer's default limiter.
    fn route<'r>(&self, head: &Head<'r>) -> Option<&'r str> {
        let _ = head;
        None
    }

    /// The priority class, on `limiter` (the route's); `None` is the
    /// route's default class.
    fn class(&self, head: &Head<'_>, limiter: &Limiter) -> Option<ClassId>;

    /// The tenant id, if any. `Err` refuses the request with
    /// `invalid_tenant_id` (400).
    fn tenant<'r>(&self, head: &Head<'r>) -> Result<Option<&'r str>, InvalidTenant>;
}

type KeyFn = Box<dyn for<'r> Fn(&Head<'r>) -> Option<&'r str> + Send + Sync>;

/// The default classifier: the gateway's headers, each part replaceable by
/// a closure.
///
/// ```
/// use floodwall_tower::Classifier;
///
/// let classify = Classifier::new()
///     // batch for anything under /reports, else the header or the default
///     .class_with(|head| head.uri.path().starts_with("/reports").then_some("batch"))
///     // the tenant from another header
///     .tenant_header("x-customer")
///     // one limiter per API version
///     .route_with(|head| head.uri.path().split('/').nth(1));
/// # let _ = classify;
/// ```
pub struct Classifier {
    priority_header: HeaderName,
    tenant_header: HeaderName,
    max_tenant_len: usize,
    class_fn: Option<KeyFn>,
    tenant_fn: Option<KeyFn>,
    route_fn: Option<KeyFn>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("priority_header", &self.priority_header)
            .field("tenant_header", &self.tenant_header)
            .field("max_tenant_len", &self.max_tenant_len)
            .field("class_fn", &self.class_fn.is_some())
            .field("tenant_fn", &self.tenant_fn.is_some())
            .field("route_fn", &self.route_fn.is_some())
            .finish()
    }
}

/// The gateway's default priority header (`server.priority_header`).
pub const PRIORITY_HEADER: &str = "x-priority";
/// The gateway's default tenant header (`server.tenant_header`).
pub const TENANT_HEADER: &str = "x-tenant-id";
/// The gateway's default longest tenant id (`server.max_tenant_id_len`).
pub const MAX_TENANT_LEN: usize = 128;

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// The gateway's defaults: `X-Priority`, `X-Tenant-Id` up to 128 bytes.
    pub fn new() -> Self {
        Self {
            priority_header: HeaderName::from_static(PRIORITY_HEADER),
            tenant_header: HeaderName::from_static(TENANT_HEADER),
            max_tenant_len: MAX_TENANT_LEN,
            class_fn: None,
            tenant_fn: None,
            route_fn: None,
        }
    }

    /// Reads the class name from `name` instead of `X-Priority`.
    ///
    /// # Panics
    /// If `name` is not a valid header name (a programming error, caught
    /// on the first run).
    pub fn priority_header(mut self, name: &str) -> Self {
        self.priority_header = HeaderName::try_from(name).expect("a valid header name");
        self
    }

    /// Reads the tenant from `name` instead of `X-Tenant-Id`.
    ///
    /// # Panics
    /// If `name` is not a valid header name.
    pub fn tenant_header(mut self, name: &str) -> Self {
        self.tenant_header = HeaderName::try_from(name).expect("a valid header name");
        self
    }

    /// Refuses tenant ids longer than `len` bytes (default 128).
    pub fn max_tenant_len(mut self, len: usize) -> Self {
        self.max_tenant_len = len;
        self
    }

    /// Names the class with `f` instead of the header; `None` falls back to
    /// the header, then the route's default class.
    pub fn class_with(
        mut self,
        f: impl for<'r> Fn(&Head<'r>) -> Option<&'r str> + Send + Sync + 'static,
    ) -> Self {
        self.class_fn = Some(Box::new(f));
        self
    }

    /// Names the tenant with `f` instead of the header. The id is checked
    /// as a header's would be.
    pub fn tenant_with(
        mut self,
        f: impl for<'r> Fn(&Head<'r>) -> Option<&'r str> + Send + Sync + 'static,
    ) -> Self {
        self.tenant_fn = Some(Box::new(f));
        self
    }

    /// Picks the route's limiter with `f` (see [`Classify::route`]).
    pub fn route_with(
        mut self,
        f: impl for<'r> Fn(&Head<'r>) -> Option<&'r str> + Send + Sync + 'static,
    ) -> Self {
        self.route_fn = Some(Box::new(f));
        self
    }
}

impl Classify for Classifier {
    fn route<'r>(&self, head: &Head<'r>) -> Option<&'r str> {
        self.route_fn.as_ref().and_then(|f| f(head))
    }

    fn class(&self, head: &Head<'_>, limiter: &Limiter) -> Option<ClassId> {
        let by_fn = self
            .class_fn
            .as_ref()
            .and_then(|f| f(head))
            .and_then(|name| limiter.class_id(name));
        by_fn.or_else(|| {
            head.header(&self.priority_header)
                .and_then(|v| limiter.class_id(v.trim()))
        })
    }

    fn tenant<'r>(&self, head: &Head<'r>) -> Result<Option<&'r str>, InvalidTenant> {
        let id = match &self.tenant_fn {
            Some(f) => f(head),
            None => match head.headers.get(&self.tenant_header) {
                None => None,
                Some(v) => Some(v.to_str().map_err(|_| InvalidTenant::new())?),
            },
        };
        match id {
            None | Some("") => Ok(None),
            Some(id)
                if id.len() > self.max_tenant_len
                    || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
            {
                Err(InvalidTenant::new())
            }
            Some(id) => Ok(Some(id)),
        }
    }
}
