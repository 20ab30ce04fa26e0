//! Watch responses: newline-delimited JSON watch events (`{"type": "ADDED",
//! "object": {...}}`) streamed over a chunked HTTP/1.1 body until
//! `timeoutSeconds`, the client hanging up, or the client falling too far
//! behind (then it must re-list, as with a real server).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::selectors::{FieldSelector, LabelSelector};
use super::store::Event;

/// A response body fed from a channel.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// What a watch selects.
pub struct WatchFilter {
    /// Index of the watched resource type.
    pub rt: usize,
    /// Namespace, or all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn wants(&self, e: &Event) -> bool {
        e.rt == self.rt
            && self.namespace.as_deref().is_none_or(|n| n == e.namespace)
            && self.labels.matches(&e.object)
            && self.fields.matches(&e.object)
    }
}

fn line(e: &Event) -> Bytes {
    let mut s = json!({"type": e.kind.as_str(), "object": e.object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Starts streaming: first `replay`, then live events, for at most
/// `timeout`.
pub fn stream(
    replay: Vec<Arc<Event>>,
    mut live: broadcast::Receiver<Arc<Event>>,
    filter: WatchFilter,
    timeout: Duration,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = 0;
        for e in replay.iter().filter(|e| filter.wants(e)) {
            last = last.max(e.rv);
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        last = replay.iter().map(|e| e.rv).max().unwrap_or(last);
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    // Replayed already (subscribed before the replay was taken).
                    Ok(e) if e.rv <= last => {}
                    Ok(e) => {
                        if filter.wants(&e) && tx.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                    // Lagged or closed: end the stream; clients re-list.
                    Err(_) => return,
                },
                () = tx.closed() => return,
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    ChannelBody { rx }
}
