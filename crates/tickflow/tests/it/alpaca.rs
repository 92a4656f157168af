//! `[[sources]] type = "alpaca"` end to end, with gap repair: the stream drops without a
//! close frame, the source reconnects and resubscribes, the trades it missed are fetched
//! from Alpaca's historical REST (two pages, a row repeated on their edge), and the lake
//! holds every trade once. The gap is listed by `tickflow gaps` and `GET /api/v1/gaps`.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, config, http, run_ok, wait_for};

/// When trade `id` happened: an hour ago plus `id` and a half seconds, recent enough for
/// gap repair (which leaves gaps over three days to backfill).
fn when(id: u64) -> tickflow_model::UnixNanos {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let hour_ago = tickflow_model::UnixNanos::now().0 - 3_600_000_000_000;
        hour_ago - hour_ago % 60_000_000_000
    });
    tickflow_model::UnixNanos(base + id as i64 * 1_000_000_000 + 500_000_000)
}

fn trade(id: u64) -> String {
    format!(
        r#"{{"T":"t","S":"AAPL","i":{id},"x":"V","p":{}.25,"s":10,"c":["@"],"t":"{}","z":"C"}}"#,
        180 + id,
        when(id)
    )
}

/// A REST trade as the historical API writes it: the stream's fields, without `T` and `S`.
fn rest_trade(id: u64) -> String {
    trade(id).replace(r#""T":"t","S":"AAPL","#, "")
}

/// The stream: trades 1–3, then a drop without a close frame; on the next connection
/// trades 6 and 7. The history: trades 3–6 in two pages, 4 on both. Returns the stream URL,
/// the REST base and the REST requests seen (path and key header).
/// REST requests seen: path with query, and the key header.
type Asked = Arc<Mutex<Vec<(String, String)>>>;

fn alpaca() -> (String, String, Asked) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let ws = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    ws.set_nonblocking(true).unwrap();
    rest.set_nonblocking(true).unwrap();
    let ws_url = format!("ws://{}", ws.local_addr().unwrap());
    let rest_url = format!("http://{}", rest.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(
                move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                    let log = Arc::clone(&log);
                    async move {
                        let key = headers
                            .get("apca-api-key-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        log.lock().unwrap().push((uri.to_string(), key));
                        let body = if uri.query().unwrap_or_default().contains("page_token=p2") {
                            format!(
                                r#"{{"trades":{{"AAPL":[{},{},{}]}},"next_page_token":null}}"#,
                                rest_trade(4),
                                rest_trade(5),
                                rest_trade(6)
                            )
                        } else {
                            format!(
                                r#"{{"trades":{{"AAPL":[{},{}]}},"next_page_token":"p2"}}"#,
                                rest_trade(3),
                                rest_trade(4)
                            )
                        };
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                },
            );
            tokio::spawn(async move {
                let rest = tokio::net::TcpListener::from_std(rest).unwrap();
                axum::serve(rest, app).await.unwrap();
            });
            let listener = tokio::net::TcpListener::from_std(ws).unwrap();
            for (i, frames) in [vec![trade(1), trade(2), trade(3)], vec![trade(6), trade(7)]]
                .into_iter()
                .enumerate()
            {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Message::text(r#"[{"T":"success","msg":"connected"}]"#))
                    .await
                    .unwrap();
                let _auth = ws.next().await;
                ws.send(Message::text(r#"[{"T":"success","msg":"authenticated"}]"#))
                    .await
                    .unwrap();
                let _subscribe = ws.next().await;
                ws.send(Message::text(
                    r#"[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]"#,
                ))
                .await
                .unwrap();
                for frame in frames {
                    ws.send(Message::text(format!("[{frame}]"))).await.unwrap();
                }
                if i == 0 {
                    // Gone without a close frame.
                    drop(ws);
                    continue;
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        });
    });
    (ws_url, rest_url, asked)
}

#[test]
fn a_dropped_stream_is_repaired_from_rest_and_the_lake_holds_every_trade_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let (ws_url, rest_url, asked) = alpaca();
    let extra = format!(
        "\n[lake]\nflush_interval_ms = 50\n\n[[sources]]\ntype = \"alpaca\"\nurl = \"{ws_url}\"\nrest_url = \"{rest_url}\"\nkey = \"PKTEST\"\nsecret = \"s3cret\"\nsymbols = [\"AAPL\"]\nchannels = [\"trades\"]\nretry_max_secs = 1\n"
    );
    std::fs::write(&cfg, config(&data, &extra)).unwrap();
    let server = Server::start(&cfg, &data);
    // 3 streamed, 4 fetched (3 again), 2 streamed (6 again): 7 trades, 2 duplicates.
    wait_for(
        &server,
        "seven trades in the lake, two duplicates dropped",
        |s| s["duplicates"].as_u64() == Some(2) && s["rows_durable"]["trades"].as_u64() == Some(7),
    );
    let (status, body) = http("GET", &format!("{}/api/v1/gaps", server.url), None);
    assert_eq!(status, 200);
    let gaps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gaps.as_array().unwrap().len(), 1, "{gaps:#}");
    assert_eq!(gaps[0]["state"], "filled");
    assert_eq!(gaps[0]["kind"], "trades");
    assert_eq!(
        gaps[0]["events"], 4,
        "trades 3 to 6, the page edge's 4 once"
    );
    assert_eq!(
        gaps[0]["from"],
        when(3).to_string(),
        "from the last trade passed on"
    );
    server.stop();

    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "two pages: {asked:?}");
    assert!(
        asked[0].0.starts_with(&format!(
            "/v2/stocks/trades?symbols=AAPL&start={}&",
            jiff::Timestamp::from_nanosecond(i128::from(when(3).0)).unwrap()
        )),
        "{asked:?}"
    );
    assert!(asked[1].0.contains("page_token=p2"), "{asked:?}");
    assert!(
        asked.iter().all(|(_, key)| key == "PKTEST"),
        "the key header on every page"
    );
    let ids = crate::support::sql(&data, "SELECT trade_id FROM trades ORDER BY ts_event");
    let ids: Vec<&str> = ids
        .iter()
        .map(|r| r["trade_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7"]);
    let listed = run_ok(&["gaps", "--data-dir", data.to_str().unwrap()]);
    assert!(
        listed.contains("filled") && listed.contains("1 gap(s), 0 not filled"),
        "{listed}"
    );
}
