//! Every input record accounted for: the test's topics, and an audit of
//! outputs and dead letters against the input's end offsets, read from the
//! `identify.source.{topic,partition,offset}` headers the connector writes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::kafka;

/// Topics of one test.
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
}

impl Topics {
    /// Creates fresh input (`partitions`), output (3) and dead-letter (1) topics.
    pub async fn create(name: &str, partitions: i32) -> Self {
        let t = Topics {
            input: kafka::unique(&format!("{name}-in")),
            output: kafka::unique(&format!("{name}-out")),
            dlq: kafka::unique(&format!("{name}-dlq")),
            group: kafka::unique(&format!("{name}-group")),
            partitions,
        };
        kafka::create_topics(&[(&t.input, partitions), (&t.output, 3), (&t.dlq, 1)]).await;
        t
    }
}

/// Checks the at-least-once bookkeeping after a run: which input records
/// have an output or a dead letter, how many have more than one, which none.
pub fn audit(topics: &Topics) -> Audit {
    let ends = kafka::end_offsets(&topics.input, topics.partitions);
    let outputs = kafka::read_all(&topics.output, 3);
    let dlq = kafka::read_all(&topics.dlq, 1);
    let mut seen = HashMap::<(i32, i64), u32>::new();
    for r in outputs.iter().chain(dlq.iter()) {
        assert_eq!(r.header("identify.source.topic"), topics.input);
        let p: i32 = r.header("identify.source.partition").parse().unwrap();
        let o: i64 = r.header("identify.source.offset").parse().unwrap();
        *seen.entry((p, o)).or_default() += 1;
    }
    let mut lost = Vec::new();
    for p in 0..topics.partitions {
        for o in 0..ends[p as usize] {
            if !seen.contains_key(&(p, o)) {
                lost.push((p, o));
            }
        }
    }
    let duplicates = seen.values().map(|n| (n - 1) as usize).sum();
    Audit {
        inputs: ends.iter().sum::<i64>() as usize,
        outputs,
        dlq,
        duplicates,
        lost,
    }
}

/// What [`audit`] found.
pub struct Audit {
    pub inputs: usize,
    pub outputs: Vec<kafka::Rec>,
    pub dlq: Vec<kafka::Rec>,
    pub duplicates: usize,
    pub lost: Vec<(i32, i64)>,
}

impl Audit {
    /// The one line a chaos, hostile-input or security scenario prints:
    /// `RESULT <scenario>: inputs=N lost=N duplicates=N dead_lettered=N recover_secs=X`.
    pub fn result_line(&self, scenario: &str, recover_secs: f64) -> String {
        format!(
            "RESULT {scenario}: inputs={} lost={} duplicates={} dead_lettered={} recover_secs={recover_secs:.1}",
            self.inputs,
            self.lost.len(),
            self.duplicates,
            self.dlq.len(),
        )
    }

    /// Dead letters counted by their `identify.error.reason` header.
    pub fn dlq_reasons(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for r in &self.dlq {
            *by.entry(r.header("identify.error.reason").to_string()).or_insert(0) += 1;
        }
        by
    }

    /// Panics with the first lost offsets unless nothing was lost.
    pub fn assert_nothing_lost(&self, scenario: &str) {
        assert!(
            self.lost.is_empty(),
            "{scenario}: {} records lost, first {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
    }

    /// Panics unless all `n` inputs were valid and none was dead-lettered.
    pub fn assert_all_valid_resolved(&self, n: usize) {
        assert_eq!(self.inputs, n);
        assert!(self.dlq.is_empty(), "valid emails are never dead-lettered");
    }

    pub fn summary(&self, name: &str) -> String {
        format!(
            "{name}: inputs={} outputs={} dead_lettered={} lost={} duplicates={}",
            self.inputs,
            self.outputs.len(),
            self.dlq.len(),
            self.lost.len(),
            self.duplicates
        )
    }
}

/// Waits until the group has committed up to the end of every partition.
pub async fn wait_done(topics: &Topics, limit: Duration) {
    let ends = kafka::end_offsets(&topics.input, topics.partitions);
    kafka::wait_for("all offsets committed", limit, || {
        kafka::committed(&topics.group, &topics.input, topics.partitions) == ends
    })
    .await;
}
