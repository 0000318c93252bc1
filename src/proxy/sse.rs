//! Keep-alive comments on idle SSE streams. A client that goes away is only noticed when
//! something is written to its connection; an upstream stream that stays quiet would
//! otherwise be held open for nobody. So when an event stream has been idle for a while, and
//! only between two events, the proxy writes an SSE comment (`: keep-alive`), which every
//! SSE parser ignores (WHATWG HTML, "Server-sent events", section 9.2.6). Once the client is
//! gone that write fails, the response is dropped, and the upstream connection is closed.

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use std::time::Duration;

const COMMENT: &[u8] = b": keep-alive\n\n";

/// Whether `chunk` ends an event (a blank line). Conservative: a boundary split across two
/// chunks is not recognised, which only skips a keep-alive.
fn ends_an_event(chunk: &[u8]) -> bool {
    chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\r") || chunk.ends_with(b"\r\n\r\n")
}

/// `upstream`, with a keep-alive comment after each `every` of silence that falls between
/// events.
pub(crate) fn with_keepalive<S, E>(upstream: S, every: Duration) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    futures_util::stream::unfold((upstream, true, false), move |(mut up, at_boundary, done)| async move {
        if done {
            return None;
        }
        loop {
            match tokio::time::timeout(every, up.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let boundary = if chunk.is_empty() { at_boundary } else { ends_an_event(&chunk) };
                    return Some((Ok(chunk), (up, boundary, false)));
                }
                Ok(Some(Err(e))) => return Some((Err(e), (up, false, true))),
                Ok(None) => return None,
                Err(_) if at_boundary => return Some((Ok(Bytes::from_static(COMMENT)), (up, true, false))),
                Err(_) => continue,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn comments_only_between_events_and_only_when_idle() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, ()>>(4);
        let up = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
        let mut s = Box::pin(with_keepalive(Box::pin(up), Duration::from_millis(20)));
        assert_eq!(s.next().await, Some(Ok(Bytes::from_static(COMMENT))), "idle from the start");
        tx.send(Ok(Bytes::from_static(b"data: 1\n"))).await.expect("send");
        assert_eq!(s.next().await, Some(Ok(Bytes::from_static(b"data: 1\n"))));
        // Mid-event: silence gets no comment; the rest of the event comes next.
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Ok(Bytes::from_static(b"\n"))).await.expect("send");
            tx
        });
        assert_eq!(s.next().await, Some(Ok(Bytes::from_static(b"\n"))));
        let tx = rest.await.expect("join");
        tx.send(Ok(Bytes::from_static(b"data: 2\n\n"))).await.expect("send");
        assert_eq!(s.next().await, Some(Ok(Bytes::from_static(b"data: 2\n\n"))));
        assert_eq!(s.next().await, Some(Ok(Bytes::from_static(COMMENT))), "between events");
        drop(tx);
        assert_eq!(s.next().await, None);
    }
}
