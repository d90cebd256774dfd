//! Validation of the submit body: exactly one identifier list of 1..=max
//! non-empty strings, and an optional absolute http(s) `webhook_url`.

use serde_json::{json, Value};

use super::directory::MatchType;
use super::errors::ApiError;

/// The identifier keys a submit may carry, with the kind each implies.
/// `emails` is the newer key that also accepts personal addresses; its
/// lines are reported with `match_type: "business_email"`.
pub const IDENTIFIER_FIELDS: [(&str, MatchType); 3] = [
    ("business_emails", MatchType::BusinessEmail),
    ("professional_network_profile_urls", MatchType::ProfileUrl),
    ("emails", MatchType::BusinessEmail),
];

/// A valid submit.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitRequest {
    /// Identifier kind.
    pub kind: MatchType,
    /// Submitted values, verbatim.
    pub identifiers: Vec<String>,
    /// Optional callback URL.
    pub webhook_url: Option<String>,
}

/// Parses and validates a submit body. A field set to `null` counts as absent;
/// unknown fields are ignored.
pub fn parse_submit(body: &[u8], max: usize) -> Result<SubmitRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("request body is not valid JSON: {e}"),
            json!({ "line": e.line(), "column": e.column() }),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("request body must be a JSON object", json!({})));
    };
    let present: Vec<(&str, MatchType, &Value)> = IDENTIFIER_FIELDS
        .iter()
        .filter_map(|(name, kind)| obj.get(*name).filter(|v| !v.is_null()).map(|v| (*name, *kind, v)))
        .collect();
    let accepted: Vec<&str> = IDENTIFIER_FIELDS.iter().map(|(n, _)| *n).collect();
    let (field, kind, list) = match present.as_slice() {
        [] => {
            return Err(ApiError::invalid(
                "missing identifier: provide exactly one of business_emails or professional_network_profile_urls",
                json!({ "accepted_fields": accepted }),
            ))
        }
        [one] => *one,
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _, _)| *n).collect();
            return Err(ApiError::invalid(
                format!("submit exactly one identifier type per job, got: {}", names.join(", ")),
                json!({ "fields": names }),
            ));
        }
    };
    let Value::Array(items) = list else {
        return Err(ApiError::invalid(
            format!("{field} must be an array of strings"),
            json!({ "field": field }),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            format!("{field} must contain at least one value"),
            json!({ "field": field, "count": 0 }),
        ));
    }
    if items.len() > max {
        return Err(ApiError::invalid(
            format!(
                "{field} has {} values; at most {max} are allowed per submission",
                items.len()
            ),
            json!({ "field": field, "count": items.len(), "max": max }),
        ));
    }
    let mut identifiers = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.trim().is_empty() => identifiers.push(s.clone()),
            Value::String(_) => {
                return Err(ApiError::invalid(
                    format!("{field}[{index}] must be a non-empty string"),
                    json!({ "field": field, "index": index }),
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}[{index}] must be a string"),
                    json!({ "field": field, "index": index }),
                ))
            }
        }
    }
    let webhook_url = match obj.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_http_url(s) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "webhook_url must be an absolute http(s) URL",
                json!({ "field": "webhook_url" }),
            ))
        }
    };
    Ok(SubmitRequest {
        kind,
        identifiers,
        webhook_url,
    })
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}
