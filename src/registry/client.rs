//! The Schema Registry's REST API, the two requests the connector needs:
//! a schema by its global id (`GET /schemas/ids/{id}`), and whether the
//! registry holds any subject at all (`GET /subjects`: a registry that
//! lost its schemas answers 404 for every id, which is not the records'
//! fault).

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::RegistryError;
use crate::config::SchemaRegistryConfig;

/// A schema as the registry returns it.
#[derive(Debug, Deserialize)]
pub(super) struct SchemaDoc {
    /// The schema text (Avro JSON, JSON Schema, or Protobuf: `.proto`
    /// text, or a base64 `FileDescriptorProto` as some clients register it).
    pub(super) schema: String,
    /// `AVRO` (when absent), `JSON` or `PROTOBUF`.
    #[serde(rename = "schemaType", default)]
    pub(super) schema_type: Option<String>,
    /// Other schemas this one imports.
    #[serde(default)]
    pub(super) references: Option<Vec<serde_json::Value>>,
}

/// The registry's HTTP client.
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

enum Auth {
    None,
    Basic(String, crate::config::Secret),
    Bearer(crate::config::Secret),
}

impl Client {
    pub(super) fn new(cfg: &SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .danger_accept_invalid_certs(cfg.insecure_skip_verify);
        if let Some(path) = cfg.ca() {
            let pem = std::fs::read(path)
                .map_err(|e| RegistryError::Setup(format!("schema_registry.ca_file {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistryError::Setup(format!("schema_registry.ca_file {}: {e}", path.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| RegistryError::Setup(format!("schema registry client: {e}")))?;
        let auth = if !cfg.bearer_token.is_empty() {
            Auth::Bearer(cfg.bearer_token.clone())
        } else if !cfg.username.is_empty() {
            Auth::Basic(cfg.username.clone(), cfg.password.clone())
        } else {
            Auth::None
        };
        Ok(Self {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, RegistryError> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, RegistryError> {
        let mut req = req.header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic(user, password) => req.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
        };
        // The error's text names the URL, never a credential.
        let resp = req.send().await.map_err(|e| RegistryError::Unreachable(causes(e)))?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(RegistryError::Refused(s.as_u16())),
            s => Err(RegistryError::Status(s.as_u16())),
        }
    }

    /// The schema with global id `id`.
    pub(super) async fn schema(&self, id: u32) -> Result<SchemaDoc, RegistryError> {
        let resp = self.get(&format!("/schemas/ids/{id}")).await?;
        resp.json()
            .await
            .map_err(|e| RegistryError::Unreachable(format!("schema {id}: unreadable answer: {}", causes(e))))
    }

    /// Whether the registry holds any subject (`null` and `[]` both mean none).
    pub(super) async fn has_subjects(&self) -> Result<bool, RegistryError> {
        let resp = self.get("/subjects").await?;
        let subjects: Option<Vec<String>> = resp
            .json()
            .await
            .map_err(|e| RegistryError::Unreachable(format!("subjects: unreadable answer: {}", causes(e))))?;
        Ok(subjects.is_some_and(|s| !s.is_empty()))
    }
}

impl Client {
    /// Registers `schema` (of `kind`: `AVRO` or `JSON`) under `subject`, or
    /// finds it there: its global id. A schema the subject's compatibility
    /// rule refuses (409) or the registry finds invalid (422) is
    /// [`RegistryError::Refused`]-like but names the subject and the
    /// registry's message: [`RegistryError::Incompatible`].
    pub(super) async fn register(&self, subject: &str, kind: &str, schema: &str) -> Result<u32, RegistryError> {
        let mut body = serde_json::json!({ "schema": schema });
        if kind != "AVRO" {
            body["schemaType"] = kind.into();
        }
        let path = format!("/subjects/{}/versions", urlencoding(subject));
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let resp = match self.send(req).await {
            Err(RegistryError::Status(code @ (409 | 422))) => {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    why: if code == 409 {
                        "incompatible with the subject's earlier versions under its compatibility rule".into()
                    } else {
                        "refused as an invalid schema".into()
                    },
                })
            }
            other => other?,
        };
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let r: Registered = resp
            .json()
            .await
            .map_err(|e| RegistryError::Unreachable(format!("register {subject}: unreadable answer: {}", causes(e))))?;
        Ok(r.id)
    }
}

/// A subject as one URL path segment.
fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The error and its causes, without the URL (which may hold userinfo).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
