//! What quorate logs: the spans and events of an acquisition, contention,
//! a loss, a script reload and a restart quarantine, at the levels an
//! operator would choose, and never an owner token, at any level.

mod common;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use quorate::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// A span or an event as recorded: its name, level, fields, and for an
/// event the spans it happened in.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    level: Level,
    fields: Vec<(String, String)>,
    within: Vec<String>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Log {
    spans: Vec<Entry>,
    events: Vec<Entry>,
    /// Entered spans, innermost last (one thread: a current-thread runtime).
    stack: Vec<u64>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<StdMutex<Log>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut log = self.0.lock().unwrap();
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        log.spans.push(Entry {
            name: attrs.metadata().name().to_owned(),
            level: *attrs.metadata().level(),
            fields,
            within: Vec::new(),
        });
        Id::from_u64(log.spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut log = self.0.lock().unwrap();
        let entry = &mut log.spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(&mut entry.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut log = self.0.lock().unwrap();
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let within = log
            .stack
            .iter()
            .map(|&id| log.spans[id as usize - 1].name.clone())
            .collect();
        log.events.push(Entry {
            name: event.metadata().name().to_owned(),
            level: *event.metadata().level(),
            fields,
            within,
        });
    }

    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut log = self.0.lock().unwrap();
        if let Some(at) = log.stack.iter().rposition(|&id| id == span.into_u64()) {
            log.stack.remove(at);
        }
    }
}

impl Recorder {
    fn events(&self, message: &str) -> Vec<Entry> {
        let log = self.0.lock().unwrap();
        log.events
            .iter()
            .filter(|e| e.field("message") == Some(message))
            .cloned()
            .collect()
    }

    fn spans(&self, name: &str) -> Vec<Entry> {
        let log = self.0.lock().unwrap();
        log.spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Every field value of every span and event, with its level.
    fn everything(&self) -> Vec<(Level, String)> {
        let log = self.0.lock().unwrap();
        log.spans
            .iter()
            .chain(&log.events)
            .flat_map(|e| e.fields.iter().map(move |(_, v)| (e.level, v.clone())))
            .collect()
    }
}

#[test]
fn operations_are_logged_at_an_operators_levels_without_owner_tokens() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut servers, q) = common::cluster(3).await;
        let lock = Mutex::new(&q, "traced").with_ttl(Duration::from_millis(600));
        let guard = lock.lock().await.unwrap();
        guard.fencing_token().await.unwrap();
        let token = common::majority_value(&servers, "traced").await;
        assert!(lock.try_lock().await.unwrap().is_none());

        // A loss: the key is taken away; the next renewal finds it gone.
        common::del_everywhere(&servers, "traced").await;
        tokio::time::timeout(Duration::from_secs(3), guard.lost())
            .await
            .unwrap();
        drop(guard);

        common::script_flush_all(&servers).await;
        lock.lock().await.unwrap().release().await.unwrap();

        servers[0].restart().unwrap();
        let _ = lock.try_lock().await;
        let quarantined = common::eventually(Duration::from_secs(5), || {
            let seen = !recorder.spans("quarantine").is_empty();
            async move { seen }
        })
        .await;
        assert!(quarantined, "no quarantine span");

        let leaked: Vec<(Level, String)> = recorder
            .everything()
            .into_iter()
            .filter(|(_, v)| v.contains(&token))
            .collect();
        assert!(leaked.is_empty(), "owner token logged: {leaked:?}");
    });

    let acquire = recorder.spans("acquire");
    // The first lock: decided once two of three granted.
    let granted = &acquire[0];
    assert_eq!(granted.level, Level::DEBUG);
    assert_eq!(granted.field("primitive"), Some("mutex"));
    assert_eq!(granted.field("resource"), Some("traced"));
    assert_eq!(granted.field("granted"), Some("2"));
    assert_eq!(granted.field("needed"), Some("2"));
    let votes = granted.field("votes").unwrap();
    assert!(
        votes.starts_with("2 of 2 needed (") && votes.matches(": granted").count() == 2,
        "{votes}"
    );
    assert_eq!(acquire[1].field("granted"), Some("0"), "the try_lock");

    let contended = recorder.events("held by someone else");
    assert!(!contended.is_empty());
    assert!(
        contended
            .iter()
            .all(|e| e.level == Level::DEBUG && e.within.contains(&"acquire".to_owned()))
    );

    let lost = recorder.events("lease lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].level, Level::WARN);
    assert!(lost[0].within.contains(&"loss".to_owned()), "{lost:?}");
    let loss = recorder.spans("loss");
    assert_eq!(loss[0].field("resource"), Some("traced"));

    let reloads = recorder.spans("script_reload");
    assert!(
        reloads
            .iter()
            .any(|s| s.field("script") == Some("mutex_release")),
        "{reloads:?}"
    );

    let entered = recorder.events("node presumed restarted; its grants do not count for a while");
    assert_eq!(entered.len(), 1, "{entered:?}");
    assert_eq!(entered[0].level, Level::WARN);
    assert!(entered[0].within.contains(&"quarantine".to_owned()));
    assert!(!recorder.spans("release").is_empty());
    assert!(!recorder.spans("renew").is_empty());
    assert!(!recorder.spans("wait").is_empty());
}
