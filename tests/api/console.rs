//! The web console's files, as the binary serves them. (What a person does
//! with them in a browser is not tested here yet: see the README.)

use crate::helpers::spawn_app;

/// `/console` and its script and style come from the binary itself, with their
/// types and a policy that lets only our own files run; no key is needed to
/// load them, and the script calls nothing but the public `/v1` API.
#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    for (path, content_type, marker) in [
        ("/console", "text/html", "<form id=\"sign-in-form\">"),
        ("/console/app.js", "text/javascript", "sessionStorage"),
        ("/console/app.css", "text/css", "#drop"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}: {headers:?}");
        assert!(headers["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"), "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path}");
        if path.ends_with(".js") {
            let calls: Vec<&str> = body.match_indices("api(`").map(|(i, _)| &body[i + 5..i + 9]).collect();
            let calls: Vec<&str> =
                calls.into_iter().chain(body.match_indices("api(\"").map(|(i, _)| &body[i + 5..i + 9])).collect();
            assert!(!calls.is_empty() && calls.iter().all(|c| *c == "/v1/"), "{calls:?}");
        }
    }
}
