//! Each kind of check against real sockets on 127.0.0.1 and the in-memory engine's exec.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::engine::memory::MemoryEngine;
use crate::engine::ContainerSpec;

/// A server on 127.0.0.1 that answers each connection with `answer` (`None`: closes at once;
/// `Some("")`: holds the connection open without a word).
async fn server(answer: Option<&'static str>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                match answer {
                    None => drop(s),
                    Some("") => tokio::time::sleep(Duration::from_secs(30)).await,
                    Some(a) => {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(a.as_bytes()).await;
                    }
                }
            });
        }
    });
    port
}

fn http(path: &str) -> Check {
    Check::Http {
        path: path.into(),
        port: 80,
        expect: vec![(200, 399)],
    }
}

async fn at(check: &Check, port: u16) -> Outcome {
    probe(
        check,
        Target::Address("127.0.0.1".into(), port),
        Duration::from_millis(500),
    )
    .await
}

#[tokio::test]
async fn http_passes_on_an_expected_status_and_fails_on_others() {
    let ok = server(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
    assert_eq!(
        at(&http("/healthz"), ok).await,
        Outcome::Pass("HTTP 204 from GET /healthz".into())
    );
    let broken = server(Some("HTTP/1.0 500 Oops\r\n\r\n")).await;
    assert_eq!(
        at(&http("/"), broken).await,
        Outcome::Fail("HTTP 500 from GET /".into())
    );
    let strict = Check::Http {
        path: "/".into(),
        port: 80,
        expect: vec![(500, 500)],
    };
    assert!(matches!(at(&strict, broken).await, Outcome::Pass(_)));
}

#[tokio::test]
async fn http_fails_on_silence_garbage_a_closed_connection_and_a_refusal() {
    let silent = server(Some("")).await;
    let o = at(&http("/"), silent).await;
    assert_eq!(o, Outcome::Fail("GET /: no answer within 500ms".into()));
    let garbage = server(Some("SSH-2.0-OpenSSH\r\n")).await;
    assert!(at(&http("/"), garbage)
        .await
        .text()
        .contains("not an HTTP answer"));
    let closing = server(None).await;
    assert!(matches!(at(&http("/"), closing).await, Outcome::Fail(_)));
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    assert!(matches!(at(&http("/"), refused).await, Outcome::Fail(_)));
}

#[tokio::test]
async fn tcp_passes_on_an_open_connection_and_fails_when_it_is_closed_at_once() {
    let check = Check::Tcp { port: 80 };
    let open = server(Some("")).await;
    assert_eq!(
        at(&check, open).await,
        Outcome::Pass("TCP port 80: connected".into())
    );
    let closing = server(None).await;
    assert!(at(&check, closing).await.text().contains("closed at once"));
}

#[tokio::test]
async fn a_missing_target_gives_no_verdict() {
    let o = probe(
        &http("/"),
        Target::Missing("port 80 not published".into()),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(o, Outcome::Unknown("port 80 not published".into()));
}

#[tokio::test]
async fn exec_passes_on_exit_0_fails_otherwise_and_a_gone_container_gives_no_verdict() {
    let engine = MemoryEngine::new();
    let c = engine
        .create_and_start(&ContainerSpec {
            name: "web-1".into(),
            image: "img".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let check = Check::Exec {
        command: vec!["cat".into(), "/tmp/ok".into()],
    };
    let target = || Target::Container(Arc::new(engine.clone()) as Arc<dyn Engine>, c.id.clone());
    let t = Duration::from_secs(1);
    assert_eq!(
        probe(&check, target(), t).await,
        Outcome::Pass("exec cat /tmp/ok exited 0".into())
    );
    engine
        .set_exec(&c.id, 1, "cat: can't open '/tmp/ok'\n")
        .unwrap();
    assert_eq!(
        probe(&check, target(), t).await,
        Outcome::Fail("exec cat /tmp/ok exited 1: cat: can't open '/tmp/ok'".into())
    );
    engine.remove_by_hand(&c.id).unwrap();
    assert!(matches!(
        probe(&check, target(), t).await,
        Outcome::Unknown(_)
    ));
}

#[test]
fn shown_output_is_short_and_on_one_line() {
    assert_eq!(shown("a\nb"), "a b");
    assert_eq!(shown(&"x".repeat(500)).chars().count(), SHOWN_MAX + 1);
}
