//! `identify-connector lookup`: what the connector knows of identifiers
//! (matched or not, the person's id and name, when and by which job it
//! was resolved, whether it was paid). It asks the running connector over
//! its Unix socket in `cache.dir` ([`socket`]), reads the local store when
//! no connector runs, or reads the store topic itself (`--from-topic`).

mod answer;
mod socket;

use std::collections::{HashMap, HashSet};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use answer::Answer;
pub(crate) use socket::{path as socket_path, serve, MAX_IDENTIFIERS};

use crate::config::Config;
use crate::store::{decode_result, read_local, result_key, Cached};
use answer::{answer, parse};

/// Why a lookup could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Nothing to look up.
    #[error("name at least one identifier to look up")]
    Usage,
    /// The local store cannot be read.
    #[error("{0}")]
    Store(String),
    /// Kafka failed (`--from-topic`).
    #[error("kafka: {0}")]
    Kafka(String),
    /// The running connector's socket failed mid-answer.
    #[error("the running connector did not answer: {0}")]
    Socket(std::io::Error),
}

/// Looks `ids` up under `cfg`: in the store topic with `from_topic`,
/// else from the running connector, else from the local store.
pub async fn run(cfg: &Config, ids: &[String], from_topic: bool) -> Result<Vec<Answer>, LookupError> {
    if ids.is_empty() {
        return Err(LookupError::Usage);
    }
    if from_topic {
        return from_store_topic(cfg, ids);
    }
    let socket = socket_path(&cfg.cache.dir);
    if UnixStream::connect(&socket).await.is_ok() {
        let mut answers = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDENTIFIERS) {
            let conn = UnixStream::connect(&socket).await.map_err(LookupError::Socket)?;
            answers.extend(ask(conn, chunk).await.map_err(LookupError::Socket)?);
        }
        return Ok(answers);
    }
    // No connector runs here (no socket, or one left by a crash).
    let wanted: Vec<_> = ids.iter().filter_map(|raw| parse(raw)).collect();
    let stored = read_local(cfg, &wanted).map_err(|e| LookupError::Store(e.to_string()))?;
    let found: HashMap<_, _> = wanted.into_iter().zip(stored).collect();
    Ok(ids
        .iter()
        .map(|raw| {
            let c = parse(raw).and_then(|k| found.get(&k)).and_then(Option::as_ref);
            answer(raw, c, "local_store")
        })
        .collect())
}

async fn ask(conn: UnixStream, ids: &[String]) -> std::io::Result<Vec<Answer>> {
    let (read, mut write) = conn.into_split();
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(id.replace('\n', " ").as_bytes());
        out.push(b'\n');
    }
    write.write_all(&out).await?;
    write.shutdown().await?;
    let mut lines = BufReader::new(read).lines();
    let mut answers = Vec::with_capacity(ids.len());
    while let Some(line) = lines.next_line().await? {
        let refused = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        if let Some(why) = refused {
            return Err(std::io::Error::other(why));
        }
        answers.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    if answers.len() != ids.len() {
        return Err(std::io::Error::other(format!(
            "{} answers to {} identifiers",
            answers.len(),
            ids.len()
        )));
    }
    Ok(answers)
}

fn from_store_topic(cfg: &Config, ids: &[String]) -> Result<Vec<Answer>, LookupError> {
    let topic = cfg.cache.topic_name(&cfg.kafka);
    let keys: HashSet<String> = ids
        .iter()
        .filter_map(|raw| parse(raw).map(|(k, v)| result_key(k, &v)))
        .collect();
    let mut found: HashMap<String, Cached> = HashMap::new();
    let partitions = crate::scan::partitions(cfg, &topic)
        .map_err(LookupError::Kafka)?
        .ok_or_else(|| LookupError::Kafka(format!("the store topic {topic:?} does not exist")))?;
    crate::scan::read_to_end(cfg, &topic, partitions, |r| {
        let Some(key) = r
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| keys.contains(*k))
        else {
            return;
        };
        match r.value.as_deref().and_then(decode_result) {
            Some(c) => found.insert(key.to_string(), c),
            None => found.remove(key),
        };
    })
    .map_err(LookupError::Kafka)?;
    Ok(ids
        .iter()
        .map(|raw| {
            let c = parse(raw).and_then(|(k, v)| found.get(&result_key(k, &v)));
            answer(raw, c, "topic")
        })
        .collect())
}
