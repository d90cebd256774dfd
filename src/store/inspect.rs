//! Reading results for the `lookup` tool: from the running store (whatever
//! its age), from the local store of a stopped connector, or from a value
//! of the store topic.

use std::path::Path;

use super::disk::Disk;
use super::{record, Cached, KafkaStore, StoreError};
use crate::config::Config;
use crate::model::IdentifierType;

impl KafkaStore {
    /// What the local store holds for `value`, however old.
    pub(crate) fn stored(&self, kind: IdentifierType, value: &str) -> Option<Cached> {
        let v = self.disk.result(&record::result_key(kind, value)).ok()??;
        record::decode_result(&v)
    }
}

/// Reads `wanted` from the local store of `cfg` (no connector may hold it).
pub(crate) fn read_local(cfg: &Config, wanted: &[(IdentifierType, String)]) -> Result<Vec<Option<Cached>>, StoreError> {
    let dir = Path::new(&cfg.cache.dir);
    if !dir.join("store.redb").exists() {
        return Err(StoreError::Disk(format!(
            "no local store in cache.dir {} (use --from-topic to read the store topic)",
            dir.display()
        )));
    }
    let topic = cfg.cache.topic_name(&cfg.kafka);
    let disk = Disk::open_mirror_of(dir, &topic)?;
    wanted
        .iter()
        .map(|(kind, value)| {
            let v = disk.result(&record::result_key(*kind, value))?;
            Ok(v.and_then(|v| record::decode_result(&v)))
        })
        .collect()
}

/// The store topic's key of a result.
pub(crate) fn result_key(kind: IdentifierType, value: &str) -> String {
    record::result_key(kind, value)
}

/// Reads a result value of the store topic.
pub(crate) fn decode(value: &[u8]) -> Option<Cached> {
    record::decode_result(value)
}
