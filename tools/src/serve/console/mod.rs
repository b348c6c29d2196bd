//! The web console at `/`: plain HTML, JavaScript and CSS built into the binary (no build step),
//! a single page that draws everything from the JSON API. Components and their workers (with
//! `worker list --filter` expressions), a worker's metadata, oplog timeline (paged through
//! `GET .../oplog`), the promise it awaits, its output live (`GET .../connect`) and actions;
//! its snapshots and a heatmap of the pages that changed between two of them.
//!
//! The assets hold no data, so they are served without the access token; the page asks for the
//! token when the API answers 401 and sends it with each request (`Authorization: Bearer`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Served without the access token: the console's static assets.
pub fn is_asset(path: &str) -> bool {
    matches!(path, "/" | "/console/app.js" | "/console/style.css")
}

/// The console's routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(app_js))
        .route("/console/style.css", get(style_css))
}

/// The console's page.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The web console", content_type = "text/html", body = String)))]
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's script.
#[utoipa::path(get, path = "/console/app.js", tag = "console",
    responses((status = 200, description = "The console's script", content_type = "text/javascript", body = String)))]
pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/style.css", tag = "console",
    responses((status = 200, description = "The console's style sheet", content_type = "text/css", body = String)))]
pub async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page runs only its own script and talks only to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
