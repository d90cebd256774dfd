//! The running connector's side of `lookup`: a Unix socket in `cache.dir`
//! (`lookup.sock`, owner-only), so that the tool works beside a running
//! connector (which holds the local store) from inside the pod, and
//! nothing about people is served on a network port. One identifier per
//! line in, one JSON answer per line out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::answer::{answer, parse};
use crate::store::KafkaStore;

/// Identifiers one connection may ask for.
const MAX_IDENTIFIERS: usize = 10_000;
/// The longest identifier line read.
const MAX_LINE: usize = 4096;

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
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = answer_all(conn, &store).await {
                debug!(error = %e, "a lookup connection failed");
            }
        });
    }
}

async fn answer_all(conn: UnixStream, store: &KafkaStore) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let bounded = tokio::io::AsyncReadExt::take(read, (MAX_IDENTIFIERS * (MAX_LINE + 1)) as u64);
    let mut lines = BufReader::new(bounded).lines();
    let mut n = 0;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        if n > MAX_IDENTIFIERS || line.len() > MAX_LINE {
            break;
        }
        let stored = parse(&line).and_then(|(kind, value)| store.stored(kind, &value));
        let a = answer(&line, stored.as_ref(), "connector");
        let mut json = serde_json::to_vec(&a).expect("an answer serializes");
        json.push(b'\n');
        write.write_all(&json).await?;
    }
    write.shutdown().await
}
