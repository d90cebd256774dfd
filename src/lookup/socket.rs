//! The running connector's side of `lookup`: a Unix socket in `cache.dir`
//! (`lookup.sock`, owner-only), so that the tool works beside a running
//! connector (which holds the local store) from inside the pod, and
//! nothing about people is served on a network port. One identifier per
//! line in (all of them before any answer), one JSON answer per line out;
//! bounded in connections, identifiers, line length and time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::answer::{answer, parse};
use crate::store::KafkaStore;

/// Identifiers one connection may ask for (the tool sends more over
/// several connections).
pub(crate) const MAX_IDENTIFIERS: usize = 1000;
/// The longest identifier line read.
const MAX_LINE: usize = 2048;
/// Connections answered at once.
const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to send its identifiers.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket's path for `cache_dir`.
pub(crate) fn path(cache_dir: &str) -> PathBuf {
    Path::new(cache_dir).join("lookup.sock")
}

/// Serves lookups at `path` until the task is aborted.
pub(crate) async fn serve(store: Arc<KafkaStore>, path: PathBuf) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open the lookup socket; `identify-connector lookup` will not reach this process");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = answer_all(conn, &store).await {
                debug!(error = %e, "a lookup connection failed");
            }
            drop(slot);
        });
    }
}

/// Reads every identifier first (bounded in count, length and time), then
/// answers each on its own line; a request beyond the bounds gets one
/// `{"error": ...}` line.
async fn answer_all(conn: UnixStream, store: &KafkaStore) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let bound = (MAX_IDENTIFIERS * (MAX_LINE + 1) + 1) as u64;
    let mut lines = BufReader::new(read.take(bound)).lines();
    let mut asked = Vec::new();
    let read_all = async {
        while let Some(line) = lines.next_line().await? {
            if asked.len() == MAX_IDENTIFIERS || line.len() > MAX_LINE {
                return Ok(Some(format!(
                    "at most {MAX_IDENTIFIERS} identifiers of at most {MAX_LINE} bytes per connection"
                )));
            }
            asked.push(line);
        }
        Ok::<_, std::io::Error>(None)
    };
    let refused = match tokio::time::timeout(READ_TIMEOUT, read_all).await {
        Ok(r) => r?,
        Err(_) => Some(format!("the identifiers did not arrive within {READ_TIMEOUT:?}")),
    };
    if let Some(why) = refused {
        let line = serde_json::json!({ "error": why }).to_string() + "\n";
        write.write_all(line.as_bytes()).await?;
        return write.shutdown().await;
    }
    for line in &asked {
        let stored = parse(line).and_then(|(kind, value)| store.stored(kind, &value));
        let a = answer(line, stored.as_ref(), "connector");
        let mut json = serde_json::to_vec(&a).expect("an answer serializes");
        json.push(b'\n');
        write.write_all(&json).await?;
    }
    write.shutdown().await
}
