//! Which web pages may read the node's answers (`http.cors_origins`). Pages served from
//! elsewhere post WHIP/WHEP offers and ask `/lb`, so those answer cross-origin; the admin
//! endpoints never do, so a page on another site cannot read them with its visitor's access.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, VARY,
};

/// The configured CORS policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Cors {
    /// `*`: any page may read the answers (the default).
    Any,
    /// Only pages from these origins (`scheme://host[:port]`); others get no CORS headers.
    Origins(Vec<String>),
}

impl Cors {
    /// The policy `http.cors_origins` configures.
    pub fn new(origins: &[String]) -> Cors {
        if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else {
            Cors::Origins(origins.to_vec())
        }
    }

    /// Adds the CORS headers an answer to `path`, asked from `origin`, carries.
    pub fn apply(&self, path: &str, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if is_admin(path) {
            return;
        }
        let allow = match self {
            Cors::Any => HeaderValue::from_static("*"),
            Cors::Origins(listed) => {
                // The answer depends on the Origin: caches must not hand it to another page.
                headers.append(VARY, HeaderValue::from_static("Origin"));
                match origin.filter(|o| listed.iter().any(|l| o.as_bytes() == l.as_bytes())) {
                    Some(origin) => origin.clone(),
                    None => return,
                }
            }
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
        );
    }
}

/// Whether `path` is an admin endpoint (`/api/...`, `/metrics`, `/rest-api/...`).
pub fn is_admin(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    matches!(
        (segments.next(), segments.next()),
        (Some("rest-api"), _) | (Some("api"), Some(_)) | (Some("metrics"), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cors: &Cors, path: &str, origin: Option<&str>) -> HeaderMap {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let mut headers = HeaderMap::new();
        cors.apply(path, origin.as_ref(), &mut headers);
        headers
    }

    #[test]
    fn any_keeps_the_star() {
        let cors = Cors::new(&["*".to_owned()]);
        let h = answer(&cors, "/whip/s", Some("https://a.example"));
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(VARY).is_none());
        assert_eq!(answer(&cors, "/lb", None)[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn a_list_echoes_listed_origins_only() {
        let cors = Cors::new(&["https://a.example".to_owned()]);
        let h = answer(&cors, "/whep/s", Some("https://a.example"));
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[VARY], "Origin");
        let h = answer(&cors, "/whep/s", Some("https://evil.example"));
        assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h[VARY], "Origin");
        let h = answer(&cors, "/whep/s", None);
        assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn admin_endpoints_never_answer_cross_origin() {
        for cors in [Cors::Any, Cors::Origins(vec!["https://a.example".into()])] {
            for path in ["/api/stats", "/rest-api/stream/find_all", "/rest-api"] {
                let h = answer(&cors, path, Some("https://a.example"));
                assert!(h.is_empty(), "{path}: {h:?}");
            }
        }
        assert!(!is_admin("/api"));
        assert!(!is_admin("/whip/api"));
        assert!(!is_admin("/"));
    }
}
