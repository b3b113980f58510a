//! The browser client as a page gets it: `/v1/herald.js` and, by following its `import … from "./…"` lines,
//! every module it needs, each as JavaScript with `herald.js`'s headers and byte for byte the file in
//! `clients/js/`. A module the client imports but the server does not serve fails here, not in a browser.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::start;

const ENTRY: &str = "/v1/herald.js";
/// A page on another origin: the README's own example imports the client from the server's address, and a browser
/// fetches module scripts in CORS mode, so each module needs the header `herald.js` has.
const FOREIGN_PAGE: (&str, &str) = ("Origin", "https://shop.example");

/// The relative specifiers of a module's static imports and re-exports: `… from "./x.js"`, `import "../y.js"`.
fn relative_imports(source: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for marker in ["from \"", "import \""] {
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            let Some(end) = rest.find('"') else { continue };
            let specifier = &rest[..end];
            if specifier.starts_with("./") || specifier.starts_with("../") {
                found.push(specifier);
            }
        }
    }
    found
}

/// `specifier` resolved against the URL path of the module that imports it, as a browser does.
fn resolve(importer: &str, specifier: &str) -> String {
    let mut segments: Vec<&str> = importer.split('/').collect();
    segments.pop();
    for part in specifier.split('/') {
        match part {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(part),
        }
    }
    segments.join("/")
}

/// The file in the repository that `url_path` (under `/v1/`) serves.
fn source_file(url_path: &str) -> PathBuf {
    let relative = url_path.strip_prefix("/v1/").unwrap();
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js").join(relative)
}

#[test]
fn imports_resolve_as_in_a_browser() {
    assert_eq!(resolve(ENTRY, "./herald/tokens.js"), "/v1/herald/tokens.js");
    assert_eq!(resolve("/v1/herald/transports/sse.js", "../http.js"), "/v1/herald/http.js");
    assert_eq!(resolve("/v1/herald/transports/sse.js", "./poll.js"), "/v1/herald/transports/poll.js");
    let source = "import { A } from \"./a.js\";\nexport {\n  B,\n} from \"../b.js\";\nimport \"./c.js\";\n\
                  // import { Herald } from \"http://127.0.0.1:7070/v1/herald.js\";\n";
    assert_eq!(relative_imports(source), ["./a.js", "../b.js", "./c.js"]);
}

#[tokio::test]
async fn herald_js_and_every_module_it_imports_are_served_as_javascript_with_its_headers() {
    let server = start().await;
    let entry = server.get_with(ENTRY, &[FOREIGN_PAGE]).await;
    assert_eq!(entry.header("Access-Control-Allow-Origin"), Some("*"));
    // The SharedWorker script is started by URL (`new SharedWorker(new URL("./worker.js", import.meta.url))`),
    // not imported: it is crawled from too.
    let worker = "/v1/herald/sharing/worker.js".to_string();
    let mut queue = vec![ENTRY.to_string(), worker.clone()];
    let mut seen = BTreeSet::from([ENTRY.to_string(), worker]);
    while let Some(path) = queue.pop() {
        let r = server.get_with(&path, &[FOREIGN_PAGE]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("text/javascript; charset=utf-8"), "{path}");
        for header in ["Cache-Control", "Access-Control-Allow-Origin"] {
            assert_eq!(r.header(header), entry.header(header), "{path}: {header}");
        }
        let on_disk = std::fs::read_to_string(source_file(&path)).unwrap();
        assert!(r.text() == on_disk, "{path} is not {}", source_file(&path).display());
        for specifier in relative_imports(&on_disk) {
            let imported = resolve(&path, specifier);
            if seen.insert(imported.clone()) {
                queue.push(imported);
            }
        }
    }
    assert!(seen.len() > 1, "herald.js imports no module: {seen:?}");
}

#[tokio::test]
async fn an_unknown_module_is_404_not_found_in_json() {
    let server = start().await;
    for path in ["/v1/herald/nope.js", "/v1/herald/transports/nope.js", "/v1/herald/"] {
        let r = server.get(path).await;
        assert_eq!((r.status, r.error_code()), (404, "not_found".into()), "{path}");
    }
}
