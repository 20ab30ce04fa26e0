//! The object store: JSON objects keyed by (resource type, namespace, name),
//! one global, monotonically increasing resourceVersion, and a bounded
//! history of change events that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::discovery::ResourceType;
use super::status::ApiError;

/// Change events kept for watches that start from an older version.
pub const DEFAULT_HISTORY: usize = 1000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as broadcast to watches.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Index of the resource type in `RESOURCES`.
    pub rt: usize,
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Value,
    /// The object before a modification (watches with selectors turn a
    /// change into ADDED or DELETED when the object enters or leaves them).
    pub previous: Option<Value>,
}

type Key = (usize, String, String);

/// A started watch: events to replay, then a receiver for later ones.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The in-memory object store.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    serial: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
    /// The rest of paged lists, by continue token: later pages come from
    /// the snapshot the first page was taken from, as the real API server
    /// serves them (a consistent list at one resourceVersion).
    pages: std::collections::HashMap<String, (u64, Vec<Value>)>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            serial: 0,
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            compacted: 0,
            tx: broadcast::channel(4096).0,
            pages: std::collections::HashMap::new(),
        }
    }
}

fn key(rt: &ResourceType, ns: &str, name: &str) -> Key {
    (rt.index(), ns.to_string(), name.to_string())
}

impl Store {
    /// The current resourceVersion (what a list reports).
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A fresh number for uids and generated names.
    pub fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The object, if present.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(rt, ns, name))
    }

    /// The object, or a NotFound error.
    pub fn get_or_404(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, in one namespace or all, ordered by
    /// (namespace, name), each with its `namespace/name` position (the
    /// pagination cursor).
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<(String, &Value)> {
        let idx = rt.index();
        self.objects
            .range((idx, String::new(), String::new())..)
            .take_while(|((i, _, _), _)| *i == idx)
            .filter(|((_, n, _), _)| ns.is_none_or(|want| want == n))
            .map(|((_, n, name), v)| (format!("{n}/{name}"), v))
            .collect()
    }

    /// Stores `obj` (created or changed), stamping the next resourceVersion,
    /// and broadcasts the event. Returns the stored object.
    pub fn put(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let previous = self.objects.insert(key(rt, ns, name), obj.clone());
        self.record(rt, ns, kind, obj.clone(), previous);
        obj
    }

    /// Removes an object, broadcasting DELETED. Returns it with the
    /// deletion's resourceVersion.
    pub fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&key(rt, ns, name))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(rt, ns, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn record(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        kind: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            rt: rt.index(),
            namespace: ns.to_string(),
            kind,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// Keeps the rest of a paged list taken at `rv`; returns its token.
    pub fn keep_page(&mut self, rv: u64, rest: Vec<Value>) -> String {
        let token = format!("{rv}-{}", self.next_serial());
        self.pages.insert(token.clone(), (rv, rest));
        token
    }

    /// The rest of a paged list (its resourceVersion and items); a token
    /// may be used again, as the real server's may until compaction.
    pub fn page(&self, token: &str) -> Option<(u64, Vec<Value>)> {
        self.pages.get(token).cloned()
    }

    /// Drops the retained history, as etcd compaction does: watches from
    /// any version older than now then fail with 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.pages.clear();
        self.compacted = self.rv;
    }

    /// Sets how many events are retained for watches.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
    }

    /// Starts a watch: the events to replay and a receiver for later ones.
    /// From no version (or "0"): synthetic ADDED events for the current
    /// objects. From a version older than the retained history: 410 Expired.
    pub fn watch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.tx.subscribe();
        let replay = match from {
            None | Some(0) => self
                .list(rt, ns)
                .into_iter()
                .map(|(_, obj)| {
                    let namespace = obj
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    Arc::new(Event {
                        rv,
                        rt: rt.index(),
                        namespace: namespace.to_string(),
                        kind: EventType::Added,
                        object: obj.clone(),
                        previous: None,
                    })
                })
                .collect(),
            Some(v) if v < self.compacted => return Err(ApiError::expired(v, self.compacted + 1)),
            Some(v) => self
                .history
                .iter()
                .filter(|e| e.rv > v && e.rt == rt.index() && ns.is_none_or(|n| n == e.namespace))
                .cloned()
                .collect(),
        };
        Ok((replay, rx))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::discovery::find;

    #[test]
    fn versions_increase_and_history_is_bounded() {
        let nodes = find("", "v1", "nodes").unwrap();
        let mut s = Store::default();
        s.set_history_limit(2);
        let a = s.put(
            nodes,
            "",
            "a",
            json!({"metadata": {"name": "a"}}),
            EventType::Added,
        );
        let b = s.put(
            nodes,
            "",
            "b",
            json!({"metadata": {"name": "b"}}),
            EventType::Added,
        );
        assert!(
            b["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > a["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
        );
        let rv_a: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        s.remove(nodes, "", "a");
        // History holds b's ADDED and a's DELETED; a's ADDED is gone.
        assert_eq!(s.watch(nodes, None, Some(rv_a)).unwrap().0.len(), 2);
        assert_eq!(s.watch(nodes, None, Some(rv_a - 1)).unwrap_err().code, 410);
        assert_eq!(s.list(nodes, None).len(), 1);
    }
}
