//! CORS for the HTTP-based endpoints (`sse-h1`, `sse-h2`, `h3`, `grpc-web`): which page origins may call them from
//! a browser ([`AllowOrigin`], `tlab serve --allow-origin`), the answer to a preflight (`OPTIONS`) and the headers an
//! actual response carries, in the `http` crate's types that hyper, h3 and tonic share. A preflight is answered
//! before the token check: browsers never send credentials with it.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

/// The page origins allowed to call an endpoint from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowOrigin {
    /// Any origin: `Access-Control-Allow-Origin: *`. Safe here because no cookie or other ambient credential is
    /// involved: a page must know the token to get anything but a 401.
    #[default]
    Any,
    /// Only these origins (`scheme://host[:port]`, compared exactly): a matching request origin is echoed back,
    /// with `Vary: Origin`; any other gets no CORS headers (its preflight a `403`).
    Only(Vec<String>),
}

impl AllowOrigin {
    /// From the values of `--allow-origin`: none, or any `*` among them, allows any origin.
    pub fn from_list(origins: &[String]) -> Self {
        if origins.is_empty() || origins.iter().any(|o| o == "*") {
            Self::Any
        } else {
            Self::Only(origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect())
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, `None` if that origin is not allowed.
    fn allowed(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            // `origin` came from a header value, so it is one.
            Self::Only(list) => list.iter().any(|o| o == origin).then(|| HeaderValue::from_str(origin).ok()).flatten(),
        }
    }
}

/// The CORS policy of one endpoint: its origins, and the methods and request headers a page may use on it.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: AllowOrigin,
    methods: &'static str,
    request_headers: &'static str,
    expose_headers: &'static str,
}

/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE_S: &str = "600";

impl Cors {
    /// A policy allowing `origins` to use `methods` (comma-separated, e.g. `"GET, POST"`) with `request_headers`
    /// (comma-separated, lowercase), and letting pages read `expose_headers` of a response (comma-separated; may be
    /// empty).
    pub fn new(origins: AllowOrigin, methods: &'static str, request_headers: &'static str, expose_headers: &'static str) -> Self {
        Self { origins, methods, request_headers, expose_headers }
    }

    /// Whether `request` is a preflight (any `OPTIONS` request: this server has no other use for the method).
    pub fn is_preflight<B>(request: &Request<B>) -> bool {
        request.method() == Method::OPTIONS
    }

    /// Adds to `response` what a browser needs to let a page read it, for a request with `request`'s headers:
    /// nothing without `Origin` (not a cross-origin request from a page) or for an origin not allowed.
    pub fn apply(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if matches!(self.origins, AllowOrigin::Only(_)) {
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(allowed) = origin(request).and_then(|o| self.origins.allowed(o)) else { return };
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if !self.expose_headers.is_empty() {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(self.expose_headers));
        }
    }

    /// The answer to a preflight with `request`'s headers: `204` with the allowed methods and request headers,
    /// cacheable for 10 minutes, or `403` for an origin not allowed (or no `Origin` when only some are allowed).
    pub fn preflight(&self, request: &HeaderMap) -> Response<()> {
        let allowed = match origin(request) {
            Some(origin) => self.origins.allowed(origin),
            None => (self.origins == AllowOrigin::Any).then(|| HeaderValue::from_static("*")),
        };
        let mut response = Response::new(());
        let headers = response.headers_mut();
        if matches!(self.origins, AllowOrigin::Only(_)) {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(allowed) = allowed else {
            *response.status_mut() = StatusCode::FORBIDDEN;
            return response;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(self.methods));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(self.request_headers));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }
}

/// The request's `Origin`, if it has a readable one.
fn origin(request: &HeaderMap) -> Option<&str> {
    request.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn answer(cors: &Cors, origin: Option<&str>) -> HeaderMap {
        let mut response = HeaderMap::new();
        cors.apply(&from(origin), &mut response);
        response
    }

    #[test]
    fn any_origin_gets_a_star_and_the_preflight_lists_methods_and_headers() {
        let cors = Cors::new(AllowOrigin::from_list(&[]), "GET, POST", "authorization, content-type", "x-limit");
        let response = answer(&cors, Some("http://page.example"));
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(response[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-limit");
        assert!(answer(&cors, None).is_empty(), "no Origin, no CORS headers");
        let preflight = cors.preflight(&from(Some("http://page.example")));
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert_eq!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization, content-type");
        assert_eq!(preflight.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(AllowOrigin::from_list(&["http://a".into(), "*".into()]), AllowOrigin::Any);
        assert!(Cors::is_preflight(&Request::builder().method("OPTIONS").body(()).unwrap()));
    }

    #[test]
    fn a_list_echoes_allowed_origins_only() {
        let cors = Cors::new(AllowOrigin::from_list(&["http://a.example/".into()]), "GET", "authorization", "");
        let allowed = answer(&cors, Some("http://a.example"));
        assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://a.example");
        assert_eq!(allowed[header::VARY], "origin");
        assert!(!allowed.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS));
        assert!(!answer(&cors, Some("http://b.example")).contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(cors.preflight(&from(Some("http://b.example"))).status(), StatusCode::FORBIDDEN);
        assert_eq!(cors.preflight(&from(None)).status(), StatusCode::FORBIDDEN);
        assert_eq!(cors.preflight(&from(Some("http://a.example"))).status(), StatusCode::NO_CONTENT);
    }
}
