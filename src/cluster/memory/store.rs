//! The embedded backend's shared data: sessions, capped lists, the service
//! registry with its round-robin cursors, and instances.
//!
//! Owns expiry the way Redis does it (a deadline per entry, swept lazily) so a
//! long-running `cargo run` node does not grow with clients that left. Does not
//! own nodes or message delivery (see the parent module).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::cluster::{InstanceRecord, ServiceRecord, Services, SessionLimits, SessionWriteError};

fn instance_record(id: &str, fields: &[(String, String)]) -> InstanceRecord {
    InstanceRecord {
        id: id.to_string(),
        fields: fields.iter().cloned().collect(),
    }
}

pub(super) struct Store {
    session_ttl: Duration,
    session_limits: SessionLimits,
    sessions: Mutex<Expiring<HashMap<String, String>>>,
    lists: Mutex<Expiring<VecDeque<String>>>,
    services: Mutex<ServiceTable>,
    /// The registry as last built, shared with readers until it changes.
    view: RwLock<Services>,
    instance_ttl: Duration,
    instances: Mutex<Expiring<Vec<(String, String)>>>,
    /// The operators' desired state (no expiry).
    desired: Mutex<HashMap<String, String>>,
}

/// Entries with a deadline; expired ones read as absent and are swept when the
/// map has doubled since the last sweep (O(1) per write on average).
struct Expiring<T> {
    entries: HashMap<String, (T, Instant)>,
    swept_at: usize,
}

impl<T: Default> Expiring<T> {
    fn new() -> Self {
        Expiring {
            entries: HashMap::new(),
            swept_at: 0,
        }
    }

    /// The live entry for `key` (a fresh one if it expired or never was),
    /// its deadline moved to `ttl` from now.
    fn live(&mut self, key: &str, ttl: Duration) -> &mut T {
        let now = Instant::now();
        if self.entries.len() >= 2 * self.swept_at.max(64) {
            self.entries.retain(|_, (_, deadline)| *deadline > now);
            self.swept_at = self.entries.len();
        }
        let entry = self
            .entries
            .entry(key.to_string())
            .or_insert_with(|| (T::default(), now + ttl));
        if entry.1 <= now {
            entry.0 = T::default();
        }
        entry.1 = now + ttl;
        &mut entry.0
    }

    /// How many entries have not expired.
    fn live_count(&self) -> usize {
        let now = Instant::now();
        self.entries
            .values()
            .filter(|(_, deadline)| *deadline > now)
            .count()
    }

    fn get(&self, key: &str) -> Option<&T> {
        self.entries
            .get(key)
            .filter(|(_, deadline)| *deadline > Instant::now())
            .map(|(value, _)| value)
    }
}

#[derive(Default)]
struct ServiceTable {
    /// name → (spec, hosts)
    services: HashMap<String, (Arc<str>, BTreeSet<String>)>,
    cursors: HashMap<String, usize>,
    /// Nodes that drain: they register in no host set any more.
    draining: HashSet<String>,
    /// host → the names of the services it registered, announced or not.
    hosted: HashMap<String, BTreeSet<String>>,
}

impl Store {
    #[cfg(test)]
    pub(super) fn new(session_ttl: Duration, instance_ttl: Duration) -> Self {
        Store::with_limits(
            session_ttl,
            instance_ttl,
            SessionLimits::from_settings(&crate::config::Settings::default()),
        )
    }

    pub(super) fn with_limits(
        session_ttl: Duration,
        instance_ttl: Duration,
        session_limits: SessionLimits,
    ) -> Self {
        Store {
            session_ttl,
            session_limits,
            sessions: Mutex::new(Expiring::new()),
            lists: Mutex::new(Expiring::new()),
            services: Mutex::new(ServiceTable::default()),
            view: RwLock::new(Arc::new(Vec::new())),
            instance_ttl,
            instances: Mutex::new(Expiring::new()),
            desired: Mutex::new(HashMap::new()),
        }
    }

    /// How many entries the store holds (sessions, lists, services and
    /// instances that have not expired): what would be keys in Redis.
    pub(super) fn entry_count(&self) -> usize {
        self.sessions.lock().live_count()
            + self.lists.lock().live_count()
            + self.services.lock().services.len()
            + self.instances.lock().live_count()
    }

    pub(super) fn session_load(&self, id: &str) -> HashMap<String, String> {
        self.sessions.lock().live(id, self.session_ttl).clone()
    }

    /// Sets fields, unless a value or the whole session would be over its
    /// limit (checked and written under one lock).
    pub(super) fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> Result<(), SessionWriteError> {
        let limits = self.session_limits;
        limits.check_values(&fields)?;
        let mut sessions = self.sessions.lock();
        let session = sessions.live(id, self.session_ttl);
        let size: usize = session
            .iter()
            .filter(|(name, _)| !fields.iter().any(|(f, _)| f == *name))
            .chain(fields.iter().map(|(n, v)| (n, v)))
            .map(|(name, value)| name.len() + value.len())
            .sum();
        if size > limits.max_bytes {
            return Err(SessionWriteError::TooLarge {
                max: limits.max_bytes,
            });
        }
        session.extend(fields);
        Ok(())
    }

    pub(super) fn session_touch(&self, id: &str) {
        let mut sessions = self.sessions.lock();
        if sessions.get(id).is_some() {
            sessions.live(id, self.session_ttl);
        }
    }

    pub(super) fn list_push(&self, name: &str, entry: String, keep: usize, ttl: Duration) {
        let mut lists = self.lists.lock();
        let list = lists.live(name, ttl);
        list.push_back(entry);
        while list.len() > keep {
            list.pop_front();
        }
    }

    pub(super) fn list_read(&self, name: &str) -> Vec<String> {
        self.lists
            .lock()
            .get(name)
            .map(|list| list.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn register_services(&self, host: &str, services: Vec<(String, String)>) {
        let mut table = self.services.lock();
        let announced = !table.draining.contains(host);
        table
            .hosted
            .entry(host.to_string())
            .or_default()
            .extend(services.iter().map(|(name, _)| name.clone()));
        for (name, spec) in services {
            let entry = table
                .services
                .entry(name)
                .or_insert_with(|| (Arc::from(spec.as_str()), BTreeSet::new()));
            entry.0 = spec.into();
            if announced {
                entry.1.insert(host.to_string());
            }
        }
        self.rebuild_view(&table);
    }

    /// A node drains: it leaves every host set and joins none again.
    pub(super) fn drain_host(&self, host: &str) {
        let mut table = self.services.lock();
        table.draining.insert(host.to_string());
        for (_, hosts) in table.services.values_mut() {
            hosts.remove(host);
        }
        self.rebuild_view(&table);
    }

    /// A node is back in its host sets: `rejoin` ends its drain; without,
    /// a draining node stays out.
    pub(super) fn announce_host(&self, host: &str, rejoin: bool) {
        let mut table = self.services.lock();
        if rejoin {
            table.draining.remove(host);
        } else if table.draining.contains(host) {
            return;
        }
        let names = table.hosted.get(host).cloned().unwrap_or_default();
        for name in names {
            if let Some((_, hosts)) = table.services.get_mut(&name) {
                hosts.insert(host.to_string());
            }
        }
        self.rebuild_view(&table);
    }

    /// A node left: it hosts nothing any more.
    pub(super) fn forget_host(&self, host: &str) {
        let mut table = self.services.lock();
        table.hosted.remove(host);
        for (_, hosts) in table.services.values_mut() {
            hosts.remove(host);
        }
        self.rebuild_view(&table);
    }

    pub(super) fn services(&self) -> Services {
        self.view.read().clone()
    }

    /// The next host of `service` in turn that `listens`, or `None`.
    pub(super) fn pick_host(
        &self,
        service: &str,
        listens: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let mut table = self.services.lock();
        let hosts: Vec<String> = table.services.get(service)?.1.iter().cloned().collect();
        if hosts.is_empty() {
            return None;
        }
        let cursor = table.cursors.entry(service.to_string()).or_default();
        let turn = *cursor;
        *cursor = cursor.wrapping_add(1);
        (0..hosts.len())
            .map(|i| &hosts[(turn + i) % hosts.len()])
            .find(|host| listens(host))
            .cloned()
    }

    pub(super) fn record_instance(
        &self,
        instance_id: &str,
        socket: &str,
        mut fields: Vec<(String, String)>,
    ) {
        fields.push(("socket".into(), socket.to_string()));
        *self.instances.lock().live(instance_id, self.instance_ttl) = fields;
    }

    /// `host` hosts these services no more.
    pub(super) fn unregister_services(&self, host: &str, names: &[String]) {
        let mut table = self.services.lock();
        for name in names {
            if let Some((_, hosts)) = table.services.get_mut(name) {
                hosts.remove(host);
            }
        }
        self.rebuild_view(&table);
    }

    /// A service leaves the registry altogether.
    pub(super) fn forget_service(&self, name: &str) {
        let mut table = self.services.lock();
        table.services.remove(name);
        table.cursors.remove(name);
        self.rebuild_view(&table);
    }

    /// Live instances (at most `limit`, by id) and how many there are.
    pub(super) fn instances(&self, limit: usize) -> (Vec<InstanceRecord>, usize) {
        let instances = self.instances.lock();
        let now = Instant::now();
        let mut live: Vec<InstanceRecord> = instances
            .entries
            .iter()
            .filter(|(_, (_, deadline))| *deadline > now)
            .map(|(id, (fields, _))| instance_record(id, fields))
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let total = live.len();
        live.truncate(limit);
        (live, total)
    }

    pub(super) fn instance(&self, id: &str) -> Option<InstanceRecord> {
        let instances = self.instances.lock();
        instances.get(id).map(|fields| instance_record(id, fields))
    }

    /// Sets fields of a live instance and starts its TTL again.
    pub(super) fn update_instance(&self, id: &str, changes: Vec<(String, String)>) -> bool {
        let mut instances = self.instances.lock();
        let Some(mut fields) = instances.get(id).cloned() else {
            return false;
        };
        for (name, value) in changes {
            fields.retain(|(field, _)| *field != name);
            fields.push((name, value));
        }
        *instances.live(id, self.instance_ttl) = fields;
        true
    }

    pub(super) fn remove_instance(&self, id: &str) -> bool {
        let mut instances = self.instances.lock();
        let existed = instances.get(id).is_some();
        instances.entries.remove(id);
        existed
    }

    pub(super) fn desired(&self) -> HashMap<String, String> {
        self.desired.lock().clone()
    }

    pub(super) fn set_desired(&self, changes: Vec<(String, Option<String>)>) {
        let mut desired = self.desired.lock();
        for (name, value) in changes {
            match value {
                Some(value) => desired.insert(name, value),
                None => desired.remove(&name),
            };
        }
    }

    fn rebuild_view(&self, table: &ServiceTable) {
        let mut records: Vec<ServiceRecord> = table
            .services
            .iter()
            .map(|(name, (spec, hosts))| ServiceRecord {
                name: name.clone(),
                spec: spec.clone(),
                hosts: hosts.iter().cloned().collect(),
            })
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        *self.view.write() = Arc::new(records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejoined_host_is_back_in_its_host_sets_and_a_reset_keeps_a_drained_one_out() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        let spec = || vec![("echo@1.0.0".to_string(), "{}".to_string())];
        store.register_services("a", spec());
        store.register_services("b", spec());
        let hosts = |store: &Store| store.services()[0].hosts.clone();
        store.drain_host("a");
        store.announce_host("a", false);
        assert_eq!(hosts(&store), ["b"], "a reset does not undo a drain");
        store.announce_host("a", true);
        assert_eq!(hosts(&store), ["a", "b"]);
        store.register_services("a", vec![("more@1".to_string(), "{}".to_string())]);
        assert_eq!(store.services()[1].hosts, ["a"], "announced again");
    }

    #[test]
    fn a_draining_host_leaves_every_host_set_and_joins_none_again() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        let spec = || vec![("echo@1.0.0".to_string(), "{}".to_string())];
        store.register_services("a", spec());
        store.register_services("b", spec());
        let hosts = |store: &Store| store.services()[0].hosts.clone();
        assert_eq!(hosts(&store), ["a", "b"]);
        store.drain_host("a");
        assert_eq!(hosts(&store), ["b"]);
        store.register_services("a", spec());
        assert_eq!(
            hosts(&store),
            ["b"],
            "a registration after the drain is not announced"
        );
        assert_eq!(
            store.pick_host("echo@1.0.0", |_| true).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn entries_are_counted_until_they_expire() {
        let store = Store::new(Duration::from_millis(30), Duration::from_secs(60));
        assert_eq!(store.entry_count(), 0);
        store
            .session_store("s1", vec![("a".into(), "1".into())])
            .unwrap();
        store.list_push("chat", "hi".into(), 10, Duration::from_secs(60));
        store.register_services("n1", vec![("svc".into(), "{}".into())]);
        assert_eq!(store.entry_count(), 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(store.entry_count(), 2, "the session expired");
    }

    #[test]
    fn sessions_keep_fields_until_they_expire() {
        let store = Store::new(Duration::from_millis(50), Duration::from_secs(60));
        store
            .session_store("s", vec![("language".into(), "fr".into())])
            .unwrap();
        store
            .session_store("s", vec![("user".into(), "ann".into())])
            .unwrap();
        let fields = store.session_load("s");
        assert_eq!(fields.get("language").map(String::as_str), Some("fr"));
        assert_eq!(fields.get("user").map(String::as_str), Some("ann"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(store.session_load("s").is_empty(), "expired");
    }

    #[test]
    fn sessions_are_capped_per_value_and_in_total() {
        let limits = SessionLimits {
            value_max_bytes: 10,
            max_bytes: 20,
        };
        let store = Store::with_limits(Duration::from_secs(60), Duration::from_secs(60), limits);
        let set = |field: &str, value: &str| {
            store.session_store("s", vec![(field.to_string(), value.to_string())])
        };
        assert!(matches!(
            set("a", &"x".repeat(11)),
            Err(SessionWriteError::ValueTooLarge { max: 10 })
        ));
        set("a", &"x".repeat(9)).unwrap(); // 10 bytes
        set("b", &"x".repeat(9)).unwrap(); // 20 bytes
        assert!(matches!(
            set("c", ""),
            Err(SessionWriteError::TooLarge { max: 20 })
        ));
        // Replacing a field counts its new size, not both.
        set("b", "y").unwrap();
        assert_eq!(store.session_load("s").len(), 2);
        assert_eq!(store.session_load("s")["b"], "y");
    }

    #[test]
    fn a_list_keeps_its_newest_entries_until_it_expires() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        for i in 0..5 {
            store.list_push("l", i.to_string(), 3, Duration::from_millis(50));
        }
        assert_eq!(store.list_read("l"), vec!["2", "3", "4"]);
        std::thread::sleep(Duration::from_millis(80));
        assert!(store.list_read("l").is_empty(), "expired");
    }

    #[test]
    fn hosts_are_picked_in_turn_skipping_those_that_do_not_listen() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        store.register_services("a", vec![("chat@1.0".into(), "{}".into())]);
        store.register_services("b", vec![("chat@1.0".into(), "{}".into())]);
        store.register_services("c", vec![("chat@1.0".into(), "{}".into())]);
        let picks: Vec<String> = (0..6)
            .map(|_| store.pick_host("chat@1.0", |_| true).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
        let picks: Vec<String> = (0..3)
            .map(|_| store.pick_host("chat@1.0", |host| host != "b").unwrap())
            .collect();
        assert_eq!(picks, ["a", "c", "c"]);
        assert_eq!(store.pick_host("nope@1", |_| true), None);
        store.forget_host("a");
        assert_eq!(store.services()[0].hosts, vec!["b", "c"]);
    }
}
