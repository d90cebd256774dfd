//! The deterministic people directory: stable hashing of identifiers, the
//! optional `--directory` JSONL file of known people, and rendering of result
//! lines (`matched_on`, `match_type`, `matches`) for a job's identifiers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};

/// Which identifier kind a job carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// `business_emails` (or the newer `emails`) submits.
    BusinessEmail,
    /// `professional_network_profile_urls` submits.
    ProfileUrl,
}

impl MatchType {
    /// The `match_type` value written in result lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::BusinessEmail => "business_email",
            MatchType::ProfileUrl => "professional_network_profile_url",
        }
    }
}

/// Normalises an identifier for matching: trimmed and lowercased.
pub fn normalize(identifier: &str) -> String {
    identifier.trim().to_lowercase()
}

/// splitmix64 finaliser: a fast, well-mixed 64-bit permutation.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of `(seed, normalize(identifier))` (FNV-1a + splitmix64),
/// identical across platforms and Rust versions.
pub fn identifier_hash(seed: u64, identifier: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let trimmed = identifier.trim();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ mix64(seed);
    if trimmed.is_ascii() {
        for b in trimmed.bytes() {
            h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(PRIME);
        }
    } else {
        // Non-ASCII identifiers are lowercased with full Unicode rules.
        for b in trimmed.to_lowercase().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    mix64(h)
}

/// Maps a hash to a uniform float in `[0, 1)`.
pub fn unit_float(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Deterministic Fisher-Yates permutation of `0..n` driven by `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = mix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Known people loaded from a JSONL file; they always match.
#[derive(Debug, Default)]
pub struct Directory {
    by_email: HashMap<String, Arc<Value>>,
    by_profile_url: HashMap<String, Arc<Value>>,
}

impl Directory {
    /// Loads lines `{"email": .., "profile_url": .., "person_data": {..}}` (either key).
    pub fn load(path: &Path) -> anyhow::Result<Directory> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading directory file {}", path.display()))?;
        let mut dir = Directory::default();
        for (no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), no + 1))?;
            let person = v
                .get("person_data")
                .filter(|p| p.is_object())
                .with_context(|| format!("{}:{}: missing person_data", path.display(), no + 1))?;
            let person = Arc::new(person.clone());
            let email = v.get("email").and_then(Value::as_str);
            let url = v.get("profile_url").and_then(Value::as_str);
            anyhow::ensure!(
                email.is_some() || url.is_some(),
                "{}:{}: needs \"email\" or \"profile_url\"",
                path.display(),
                no + 1
            );
            if let Some(e) = email {
                dir.by_email.insert(normalize(e), person.clone());
            }
            if let Some(u) = url {
                dir.by_profile_url.insert(normalize(u), person);
            }
        }
        Ok(dir)
    }

    /// Number of known people entries (emails plus profile URLs).
    pub fn len(&self) -> usize {
        self.by_email.len() + self.by_profile_url.len()
    }

    /// True when the directory holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, kind: MatchType, identifier: &str) -> Option<&Arc<Value>> {
        if self.is_empty() {
            return None;
        }
        let map = match kind {
            MatchType::BusinessEmail => &self.by_email,
            MatchType::ProfileUrl => &self.by_profile_url,
        };
        map.get(&normalize(identifier))
    }

    /// Whether `identifier` resolves to a person under `(seed, match_rate)`.
    pub fn matches(&self, kind: MatchType, seed: u64, match_rate: f64, identifier: &str) -> bool {
        self.lookup(kind, identifier).is_some() || unit_float(identifier_hash(seed, identifier)) < match_rate
    }

    /// Renders the result line of one submitted identifier.
    pub fn render_line(&self, kind: MatchType, seed: u64, match_rate: f64, identifier: &str) -> String {
        let matches = if let Some(person) = self.lookup(kind, identifier) {
            json!([{ "confidence_score": 1.0, "person_data": person.as_ref() }])
        } else {
            let h = identifier_hash(seed, identifier);
            if unit_float(h) < match_rate {
                json!([synthetic_match(kind, h, identifier)])
            } else {
                json!([])
            }
        };
        json!({
            "matched_on": identifier,
            "match_type": kind.as_str(),
            "matches": matches,
        })
        .to_string()
    }
}

const FIRST: &[&str] = &[
    "Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keiko", "Liam", "Maya",
    "Noah", "Olivia", "Priya", "Quinn", "Rafael", "Sofia", "Tariq", "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe",
];
const LAST: &[&str] = &[
    "Anderson",
    "Bauer",
    "Chen",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Johansson",
    "Kim",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Patel",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Weber",
    "Yilmaz",
    "Zhang",
];
const TITLES: &[&str] = &[
    "Software Engineer",
    "Head of Sales",
    "Product Manager",
    "Chief Technology Officer",
    "Marketing Director",
    "Data Scientist",
    "Account Executive",
    "VP Engineering",
    "Founder & CEO",
    "Customer Success Manager",
    "Recruiter",
    "Finance Manager",
];
const COMPANIES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent",
    "Vandelay",
    "Cyberdyne",
];

/// Company name derived from an email's domain, else from the hash.
fn company_for(kind: MatchType, h: u64, identifier: &str) -> String {
    if kind == MatchType::BusinessEmail {
        if let Some((_, domain)) = normalize(identifier).rsplit_once('@') {
            if let Some(label) = domain.split('.').find(|l| !l.is_empty()) {
                let mut chars = label.chars();
                if let Some(first) = chars.next() {
                    return first.to_uppercase().chain(chars).collect();
                }
            }
        }
    }
    COMPANIES[(mix64(h ^ 4) % COMPANIES.len() as u64) as usize].to_string()
}

/// A synthetic, deterministic match derived from the identifier's hash.
fn synthetic_match(kind: MatchType, h: u64, identifier: &str) -> Value {
    let pick = |salt: u64, list: &[&'static str]| list[(mix64(h ^ salt) % list.len() as u64) as usize];
    let name = format!("{} {}", pick(1, FIRST), pick(2, LAST));
    let title = pick(3, TITLES);
    let company = company_for(kind, h, identifier);
    let person_id = 1_000_000 + mix64(h ^ 5) % 900_000_000;
    let confidence = (0.8 + 0.2 * unit_float(mix64(h ^ 6))) * 100.0;
    let base: DateTime<Utc> = DateTime::from_timestamp(1_735_689_600, 0).unwrap_or_default();
    let updated = base + ChronoDuration::seconds((mix64(h ^ 7) % (500 * 86_400)) as i64);
    json!({
        "confidence_score": confidence.round() / 100.0,
        "person_data": {
            "crustdata_person_id": person_id,
            "basic_profile": {
                "name": name,
                "headline": format!("{title} at {company}"),
                "current_title": title,
            },
            "updated_at": updated.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    })
}
