//! The dashboard: a web page at `/` for renters who would rather look than read a table. Plain
//! HTML, CSS and JavaScript modules (no framework, no build step, no CDN), compiled into the
//! binary with `include_bytes!`, so it works offline and the release binary needs nothing at run
//! time. The page talks only to `/v1`, with the token the user pastes (kept in the tab's
//! `sessionStorage`, never in a cookie), so it can do nothing a `curl` with that token cannot.
//!
//! `/` answers register_api's JSON welcome unless the client asks for HTML (`Accept:
//! text/html`, as a browser navigating does): platforms written against SN27 see no change. The
//! files are served from `/ui/{file}` gzip-compressed once (at first use) when the client
//! accepts it, with a strong `ETag` per encoding and `Cache-Control: no-cache` (a browser keeps
//! them and revalidates with a `304`, so an upgraded binary is picked up at once). The page
//! gets a content security policy that allows scripts, styles and connections from this origin
//! only: nothing a miner sends can run as code even if it slipped past the page's own rule of
//! treating every value as text.

use std::io::Write;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// One file of the page.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The body gzip-compressed (level 9).
    pub gzip: Vec<u8>,
    etag: String,
    etag_gzip: String,
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page's files: `index.html` is served at `/`, every file at `/ui/{name}`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("web/index.html")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("web/app.css")),
    ("app.js", JS, include_bytes!("web/app.js")),
    ("api.js", JS, include_bytes!("web/api.js")),
    ("dom.js", JS, include_bytes!("web/dom.js")),
    ("machines.js", JS, include_bytes!("web/machines.js")),
    ("allocate.js", JS, include_bytes!("web/allocate.js")),
    ("allocations.js", JS, include_bytes!("web/allocations.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("web/icon.svg")),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing to a Vec cannot fail.
            let gzip = gz.write_all(body).and_then(|()| gz.finish()).unwrap_or_default();
            let hash = hex::encode(&Sha256::digest(body)[..12]);
            Asset { name, content_type, body, gzip, etag: format!("\"{hash}\""), etag_gzip: format!("\"{hash}-gz\"") }
        })
        .collect()
});

/// Every file of the page.
pub fn assets() -> &'static [Asset] {
    &ASSETS
}

fn asset(name: &str) -> Option<&'static Asset> {
    assets().iter().find(|a| a.name == name)
}

/// What the page may load and where it may connect: this origin only, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the client takes gzip (`gzip` listed and not refused with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |part| {
            let mut it = part.split(';').map(str::trim);
            let coding = it.next().unwrap_or("");
            let refused = it.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        },
    )
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn serve(a: &Asset, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    let etag = if gzip { &a.etag_gzip } else { &a.etag };
    let mut r = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let mut r = a.gzip.clone().into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        a.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if a.name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    r
}

/// Whether the client asks for a web page rather than register_api's JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("text/html"))
}

async fn root(headers: HeaderMap) -> Response {
    match asset("index.html") {
        Some(a) if wants_html(&headers) => {
            let mut r = serve(a, &headers);
            // The answer depends on Accept too (the JSON welcome otherwise).
            r.headers_mut().insert(header::VARY, HeaderValue::from_static("accept, accept-encoding"));
            r
        }
        _ => crate::sn27::welcome().into_response(),
    }
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match asset(&name) {
        Some(a) => serve(a, &headers),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file\n")
            .into_response(),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(root)).route("/ui/{file}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn gzip_is_negotiated() {
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip, deflate, br")])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br;q=1.0, GZIP;q=0.5")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip;q=0, br")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "identity")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_file_is_served_with_its_etag_and_revalidates() {
        for a in assets() {
            let r = serve(a, &headers(&[(header::ACCEPT_ENCODING, "gzip")]));
            assert_eq!(r.status(), StatusCode::OK, "{}", a.name);
            let etag = r.headers()[header::ETAG].to_str().expect("etag").to_owned();
            assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
            let mut again = HeaderMap::new();
            again.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            again.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).expect("etag"));
            assert_eq!(serve(a, &again).status(), StatusCode::NOT_MODIFIED, "{}", a.name);
            // The other encoding's tag does not match.
            again.remove(header::ACCEPT_ENCODING);
            assert_eq!(serve(a, &again).status(), StatusCode::OK, "{}", a.name);
            // The compressed body is the file.
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a.gzip[..]), &mut out).expect("gunzip");
            assert_eq!(out, a.body, "{}", a.name);
        }
    }

    /// The issue's budget: the page's files under 200 KB compressed (measured, not assumed).
    #[test]
    fn the_page_is_under_200_kb_compressed() {
        let total: usize = assets().iter().map(|a| a.gzip.len()).sum();
        assert!(total < 200 * 1024, "the dashboard's files are {total} bytes gzip-compressed");
    }

    #[test]
    fn only_html_clients_get_the_page() {
        assert!(wants_html(&headers(&[(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")])));
        assert!(!wants_html(&headers(&[(header::ACCEPT, "*/*")])));
        assert!(!wants_html(&headers(&[(header::ACCEPT, "application/json")])));
        assert!(!wants_html(&HeaderMap::new()));
    }

    /// The page never builds markup from strings: no `innerHTML`, `outerHTML`,
    /// `insertAdjacentHTML`, `document.write` or `eval` in any script (data from a miner is
    /// always set as text).
    #[test]
    fn no_script_builds_markup_from_strings() {
        for a in assets().iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("utf8");
            for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text.contains(bad), "{} uses {bad}", a.name);
            }
        }
    }
}
