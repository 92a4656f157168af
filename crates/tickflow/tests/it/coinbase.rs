//! `[[sources]] type = "coinbase"` end to end: a pipeline follows a local server speaking
//! Coinbase's WebSocket protocol, and its trades reach the lake and SQL once each, across a
//! dropped connection.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, config, sql, wait_for};

fn matched(id: u64, price: &str) -> String {
    format!(
        r#"{{"type":"match","trade_id":{id},"sequence":{id},"time":"2026-11-20T14:31:{id:02}.5Z","product_id":"ETH-USD","size":"0.5","price":"{price}","side":"buy"}}"#
    )
}

/// Two connections: three trades then a drop; the last one again, and two more.
fn venue() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let sessions = [
                vec![
                    matched(1, "3000.10"),
                    matched(2, "3001"),
                    matched(3, "2999.99"),
                ],
                vec![
                    matched(3, "2999.99"),
                    matched(4, "3002"),
                    matched(5, "3003.5"),
                ],
            ];
            for (i, frames) in sessions.into_iter().enumerate() {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let _subscribe = ws.next().await;
                for frame in frames {
                    ws.send(Message::text(frame)).await.unwrap();
                }
                if i == 0 {
                    drop(ws);
                    continue;
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        });
    });
    url
}

#[test]
fn coinbase_trades_reach_the_lake_once_across_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let extra = format!(
        "\n[lake]\nflush_interval_ms = 50\n\n[[sources]]\ntype = \"coinbase\"\nurl = \"{}\"\nsymbols = [\"ETH-USD\"]\nretry_max_secs = 1\nrepair_gaps = false\n",
        venue()
    );
    std::fs::write(&cfg, config(&data, &extra)).unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(
        &server,
        "six trades in, one a duplicate, five in the lake",
        |s| {
            s["ingested"]["coinbase"].as_u64() == Some(6)
                && s["duplicates"].as_u64() == Some(1)
                && s["rows_durable"]["trades"].as_u64() == Some(5)
        },
    );
    let status = server.status();
    let source = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "coinbase")
        .cloned()
        .unwrap();
    assert_eq!(source["state"], "running", "{source}");
    server.stop();
    let trades = sql(
        &data,
        "SELECT trade_id, price, source, feed FROM trades ORDER BY trade_id",
    );
    let got: Vec<(String, String)> = trades
        .iter()
        .map(|t| {
            (
                t["trade_id"].as_str().unwrap().to_string(),
                t["price"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), 5, "{trades:?}");
    assert_eq!(got[0].0, "1");
    assert_eq!(got[4].0, "5");
    assert!(
        trades
            .iter()
            .all(|t| t["source"] == "coinbase" && t["feed"] == "coinbase:matches")
    );
}
