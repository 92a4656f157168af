//! The dashboard's static files, embedded at build time from `web/`.

use axum::response::{Html, IntoResponse};

pub(crate) async fn index() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
}

pub(crate) async fn script() -> impl IntoResponse {
    (
        [("content-type", "text/javascript; charset=utf-8")],
        include_str!("../../../../web/app.js"),
    )
}

pub(crate) async fn style() -> impl IntoResponse {
    (
        [("content-type", "text/css; charset=utf-8")],
        include_str!("../../../../web/style.css"),
    )
}
