//! Publishing a record's output: the record's trace span, then straight to
//! the sink, or with `output.ordering = "key"` through the
//! [`super::order::KeyOrder`] gate (held until the earlier records of its key are out).

use std::sync::Arc;

use super::{DispatchError, Dispatcher};
use crate::jobs::Runner;
use crate::model::{has_matches, IdentifierType, InputRecord};
use crate::sink::{Publish, Resolution};
use crate::store::{Cached, ResultStore};
use crate::telemetry;

/// An output held back for an earlier record of its key.
pub(super) struct Held {
    rec: InputRecord,
    kind: IdentifierType,
    key: String,
    cached: Arc<Cached>,
    traceparent: Option<String>,
}

impl<P: Publish, R: Runner, S: ResultStore> Dispatcher<P, R, S> {
    /// Publishes `c` as the result of `rec`, unless its partition was
    /// revoked; with per-key order, once the records before it of its key
    /// are out. A traced record gets its span, linked to `job` (the job
    /// that resolved it, if one did).
    pub(super) async fn publish_one(
        &mut self,
        rec: InputRecord,
        kind: IdentifierType,
        key: &str,
        c: &Arc<Cached>,
        job: Option<&tracing::Span>,
    ) -> Result<(), DispatchError> {
        if !self.is_live(&rec) {
            return Ok(());
        }
        let traceparent = rec.traceparent.as_deref().and_then(|tp| {
            let waited = rec.timestamp_ms.map(|ts| crate::model::now_ms() - ts);
            telemetry::record(tp, job, waited)
        });
        let Some(order) = &mut self.order else {
            return self.send(&rec, kind, key, c, traceparent.as_deref()).await;
        };
        let (pos, rec_key) = (rec.pos.clone(), rec.key.clone());
        let held = Held {
            rec,
            kind,
            key: key.to_owned(),
            cached: c.clone(),
            traceparent,
        };
        let now = order.ready(&pos, rec_key.as_ref(), Some(held));
        self.send_held(now).await
    }

    /// `rec` was dead-lettered: with per-key order, the outputs held for
    /// it go now.
    pub(super) async fn dead_lettered(&mut self, rec: &InputRecord) -> Result<(), DispatchError> {
        let Some(order) = &mut self.order else {
            return Ok(());
        };
        let now = order.ready(&rec.pos, rec.key.as_ref(), None);
        self.send_held(now).await
    }

    async fn send_held(&mut self, now: Vec<Held>) -> Result<(), DispatchError> {
        for h in now {
            if self.is_live(&h.rec) {
                self.send(&h.rec, h.kind, &h.key, &h.cached, h.traceparent.as_deref())
                    .await?;
            }
        }
        if let Some(order) = &self.order {
            self.parts.metrics.set_held_outputs(order.held());
        }
        Ok(())
    }

    /// Hands the output of `rec` to the sink.
    async fn send(
        &self,
        rec: &InputRecord,
        kind: IdentifierType,
        key: &str,
        c: &Cached,
        traceparent: Option<&str>,
    ) -> Result<(), DispatchError> {
        let r = Resolution {
            identifier: key,
            identifier_type: kind.as_str(),
            matches: &c.matches,
            matched: has_matches(&c.matches),
            batch_id: &c.batch_id,
            resolved_at: &c.resolved_at,
            traceparent,
        };
        Ok(self.parts.sink.output(rec, &r).await?)
    }
}
