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
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::discovery::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Event, EventType};
use super::table;

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
    /// The BOOKMARK object sent after the replay of a streaming list.
    pub initial_events_end: Option<Value>,
    /// Send each object as a one-row Table (the client asked for server-side
    /// printing), with `includeObject=Object` or not.
    pub table: Option<(&'static ResourceType, bool)>,
}

impl WatchFilter {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event type this watch sees, if any: a modification that moves
    /// an object into the selection is ADDED, out of it DELETED.
    fn view(&self, e: &Event) -> Option<&'static str> {
        if e.rt != self.rt || self.namespace.as_deref().is_some_and(|n| n != e.namespace) {
            return None;
        }
        let now = self.selects(&e.object);
        match (e.kind, e.previous.as_ref().map(|p| self.selects(p))) {
            (EventType::Modified, Some(false)) if now => Some(EventType::Added.as_str()),
            (EventType::Modified, Some(true)) if !now => Some(EventType::Deleted.as_str()),
            (kind, _) if now => Some(kind.as_str()),
            _ => None,
        }
    }
}

fn line(filter: &WatchFilter, kind: &str, e: &Event) -> Bytes {
    let table = filter.table.and_then(|(rt, include)| {
        table::render(rt, std::slice::from_ref(&e.object), e.rv, include)
    });
    let mut s = json!({"type": kind, "object": table.as_ref().unwrap_or(&e.object)}).to_string();
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
        for e in &replay {
            last = last.max(e.rv);
            if let Some(kind) = filter.view(e)
                && tx.send(line(&filter, kind, e)).await.is_err()
            {
                return;
            }
        }
        if let Some(bookmark) = &filter.initial_events_end {
            let mut l = json!({"type": "BOOKMARK", "object": bookmark}).to_string();
            l.push('\n');
            if tx.send(Bytes::from(l)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    // Replayed already (subscribed before the replay was taken).
                    Ok(e) if e.rv <= last => {}
                    Ok(e) => {
                        if let Some(kind) = filter.view(&e)
                            && tx.send(line(&filter, kind, &e)).await.is_err()
                        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, color: &str, previous: Option<&str>) -> Event {
        let obj = |c: &str| json!({"metadata": {"name": "n", "labels": {"color": c}}});
        Event {
            rv: 2,
            rt: 1,
            namespace: String::new(),
            kind,
            object: obj(color),
            previous: previous.map(obj),
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let filter = WatchFilter {
            rt: 1,
            namespace: None,
            labels: LabelSelector::parse("color=blue").unwrap(),
            fields: FieldSelector::default(),
            initial_events_end: None,
            table: None,
        };
        assert_eq!(
            filter.view(&event(EventType::Modified, "blue", Some("red"))),
            Some("ADDED")
        );
        assert_eq!(
            filter.view(&event(EventType::Modified, "red", Some("blue"))),
            Some("DELETED")
        );
        assert_eq!(
            filter.view(&event(EventType::Modified, "blue", Some("blue"))),
            Some("MODIFIED")
        );
        assert_eq!(
            filter.view(&event(EventType::Modified, "red", Some("red"))),
            None
        );
        assert_eq!(
            filter.view(&event(EventType::Deleted, "blue", None)),
            Some("DELETED")
        );
        assert_eq!(filter.view(&event(EventType::Added, "red", None)), None);
    }
}
