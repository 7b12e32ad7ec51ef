//! Caravan's operator web page, served by the agent itself under `/ui/`.
//!
//! Three hand-written files (no npm toolchain, no third-party front-end code), embedded in the
//! binary at compile time with `include_bytes!`: `index.html`, `app.js` and `app.css`. The page
//! reads the agent's ordinary HTTP API (`/v1/agent/members`, `/v1/nodes` with blocking queries,
//! `/v1/agent/monitor` as a streamed `fetch`, …) with the operator's token in the
//! `X-Nomad-Token` header only, and inserts every value from the cluster as text, never as HTML.
//!
//! This crate holds the assets and the headers they must be served with; it has no HTTP
//! dependency. `caravan-http` mounts it (`/ui/` and the `/` redirect).
//!
//! ```
//! let page = caravan_ui::asset("").expect("the index");
//! assert_eq!(page.content_type, "text/html; charset=utf-8");
//! assert!(caravan_ui::asset("app.js").is_some());
//! assert!(caravan_ui::asset("../Cargo.toml").is_none());
//! for (name, value) in caravan_ui::SECURITY_HEADERS {
//!     println!("{name}: {value}");
//! }
//! ```
#![deny(missing_docs)]

/// Where the page is mounted: every asset is `PREFIX` + its name (`/ui/app.js`), the index is
/// `PREFIX` itself.
pub const PREFIX: &str = "/ui/";

/// The page's `Content-Security-Policy`: its own scripts, styles and API only. No inline script
/// or style, no `eval`, no plugins, no framing, no form posts elsewhere; `data:` images only for
/// the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// The headers every `/ui/` response carries (and the answer for a path that is not an asset):
/// the CSP above, `X-Content-Type-Options: nosniff` (Nomad's CVE-2020-10944 was content sniffing
/// of UI responses), no framing, no referrer (a deep link never leaks to another site), and
/// revalidation on every load (the assets change with the binary).
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its name under [`PREFIX`] (`app.js`; `index.html` for the index).
    pub name: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every asset of the page.
pub const ASSETS: [Asset; 3] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
];

/// The asset at `name`, the part of the path after [`PREFIX`]: `""` (or `index.html`) is the
/// index. Exact names only: anything else (another name, `..`, a query left on) is `None`.
pub fn asset(name: &str) -> Option<Asset> {
    let name = if name.is_empty() { "index.html" } else { name };
    ASSETS.iter().copied().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lookup() {
        let check = |name: &str, want: Option<&str>| {
            assert_eq!(asset(name).map(|a| a.name), want, "{name:?}");
        };
        check("", Some("index.html"));
        check("index.html", Some("index.html"));
        check("app.js", Some("app.js"));
        check("app.css", Some("app.css"));
        check("app.js?x=1", None);
        check("../app.js", None);
        check("/app.js", None);
        check("APP.JS", None);
        check("missing.png", None);
    }

    fn gzipped(bytes: &[u8]) -> usize {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(bytes).unwrap();
        w.finish().unwrap().len()
    }

    /// Issue 17: all assets of `/ui/` together at most 200 KB gzipped.
    #[test]
    fn page_weight_within_budget() {
        let total: usize = ASSETS.iter().map(|a| gzipped(a.body)).sum();
        assert!(total <= 200 * 1024, "{total} bytes gzipped");
    }

    /// The page must work under its own CSP: no inline script, style or event handler in the
    /// HTML, and the script never builds HTML from strings.
    #[test]
    fn assets_respect_the_policy() {
        let html = std::str::from_utf8(asset("").unwrap().body).unwrap();
        for bad in ["<script>", "style=", "onclick", "onload", "javascript:"] {
            assert!(!html.contains(bad), "index.html contains {bad:?}");
        }
        let js = std::str::from_utf8(asset("app.js").unwrap().body).unwrap();
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(bad), "app.js uses {bad:?}");
        }
    }
}
