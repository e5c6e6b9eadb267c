//! The configuration of a long-lived function, reloaded when its document
//! changes.
//!
//! When `EXPORT_CONFIG` is an `s3://bucket/key` URI, [`ConfigSource::current`]
//! checks the object at most once per [`RELOAD_INTERVAL`] (a minute), with a
//! `GetObject` carrying `If-None-Match: <last ETag>`: an unchanged document
//! costs one 304 answer and no parsing. A changed document is validated like
//! at cold start (the same environment variables override it) and replaces
//! the configuration for the next invocations. Guarantees:
//! - a bad document (invalid JSON, a field that fails validation, not UTF-8,
//!   larger than [`MAX_DOCUMENT_BYTES`], which is never read past that size)
//!   never replaces the last good configuration: it is logged and alerted
//!   once per ETag, under the destination name [`ALERT_NAME`] (`config`),
//!   and not read again until its ETag changes;
//! - a document that cannot be read (access denied, deleted, network) keeps
//!   the last good configuration too, is retried at the next check and
//!   alerted once until a read succeeds again;
//! - an inline document or none at all never changes: [`ConfigSource::fixed`];
//! - the document in use is logged with its ETag and S3 version id when it
//!   is loaded or reloaded, and [`ConfigSource::document_version`] tells it,
//!   so an operator can tell which version of `config/` decides routing;
//! - the time source is injectable ([`Clock`]), so tests need not wait a
//!   minute.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::SdkError;

use crate::alert::Alerter;
use crate::config::{self, Config, ConfigError};
use crate::diagnose::{Diagnosis, Problem};

/// How often, at most, the document's ETag is checked.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// The destination name alerts about the configuration document carry.
pub const ALERT_NAME: &str = "config";

/// The largest configuration document read from S3 (4 MiB): a document
/// holds destinations and tenant lists, far below this; a larger object is
/// refused without reading more of it, so a mistaken or hostile upload
/// cannot exhaust a function's memory.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Which version of the S3 document a configuration was built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentVersion {
    /// The object's ETag.
    pub etag: Option<String>,
    /// The object's version id, when its bucket is versioned.
    pub version_id: Option<String>,
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told (tests, replays).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one [`ConfigSource::check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The configuration is not from S3: nothing to check.
    Fixed,
    /// Checked less than [`RELOAD_INTERVAL`] ago: not checked.
    NotDue,
    /// The ETag is the same: nothing read.
    Unchanged,
    /// A new document with this ETag (and S3 version id, in a versioned
    /// bucket) is now the configuration.
    Reloaded {
        etag: Option<String>,
        version_id: Option<String>,
    },
    /// The new document (this ETag) is invalid: the last good one stays.
    Rejected {
        etag: Option<String>,
        error: ConfigError,
    },
    /// The document could not be read: the last good one stays.
    Unreadable { message: String },
}

type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The current configuration, and how to reload it (see the module).
pub struct ConfigSource {
    current: RwLock<Arc<Config>>,
    /// The document `current` was built from (`None` when fixed).
    in_use: RwLock<Option<DocumentVersion>>,
    reload: Option<Reload>,
}

struct Reload {
    s3: aws_sdk_s3::Client,
    uri: String,
    lookup: Lookup,
    clock: Arc<dyn Clock>,
    alerter: Alerter,
    interval: Duration,
    state: tokio::sync::Mutex<ReloadState>,
}

struct ReloadState {
    etag: Option<String>,
    checked_at: SystemTime,
    unreadable_alerted: bool,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSource")
            .field("uri", &self.reload.as_ref().map(|r| r.uri.as_str()))
            .finish_non_exhaustive()
    }
}

impl ConfigSource {
    /// A configuration that never changes.
    pub fn fixed(config: Config) -> Self {
        Self {
            current: RwLock::new(Arc::new(config)),
            in_use: RwLock::new(None),
            reload: None,
        }
    }

    /// The configuration the process environment describes (see
    /// [`ConfigSource::load`]), with the system clock. The variables are
    /// read once: a reload applies the same overrides.
    pub async fn from_env(s3: aws_sdk_s3::Client, alerter: Alerter) -> Result<Self, ConfigError> {
        let variables: std::collections::HashMap<String, String> = std::env::vars().collect();
        Self::load(
            move |name| variables.get(name).cloned(),
            s3,
            alerter,
            Arc::new(SystemClock),
        )
        .await
    }

    /// Loads and validates the configuration (variables through `lookup`).
    /// When `EXPORT_CONFIG` is an `s3://` URI, the document is read with `s3`
    /// and later reloaded when its ETag changes, alerting through `alerter`;
    /// otherwise the configuration is fixed. A bad first document is an
    /// error, as at every cold start.
    pub async fn load(
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        s3: aws_sdk_s3::Client,
        alerter: Alerter,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let lookup: Lookup = Arc::new(lookup);
        let document = lookup(config::env::EXPORT_CONFIG)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty());
        let uri = match document {
            Some(uri) if uri.starts_with("s3://") => uri,
            inline => {
                let lookup = lookup.clone();
                return Ok(Self::fixed(Config::from_sources(
                    move |name| lookup(name),
                    inline.as_deref(),
                )?));
            }
        };
        let field = config::env::EXPORT_CONFIG;
        let (text, version) = match fetch(&s3, &uri, None).await {
            Ok(Fetched::Document { text, version }) => (text, version),
            Ok(Fetched::NotModified) => {
                return Err(ConfigError::new(field, format!("`{uri}`: unexpected 304")));
            }
            Err(Unread::NotText(_)) => {
                return Err(ConfigError::new(
                    field,
                    format!("`{uri}` is not UTF-8 text"),
                ));
            }
            Err(Unread::TooLarge(_)) => return Err(too_large(&uri)),
            Err(Unread::Failed(message)) => {
                return Err(ConfigError::new(
                    field,
                    format!("cannot read `{uri}`: {message}"),
                ));
            }
        };
        let config = {
            let lookup = lookup.clone();
            Config::from_sources(move |name| lookup(name), Some(&text))?
        };
        tracing::info!(
            %uri,
            etag = version.etag.as_deref().unwrap_or(""),
            version_id = version.version_id.as_deref().unwrap_or(""),
            "configuration loaded"
        );
        let now = clock.now();
        Ok(Self {
            current: RwLock::new(Arc::new(config)),
            reload: Some(Reload {
                s3,
                uri,
                lookup,
                clock,
                alerter,
                interval: RELOAD_INTERVAL,
                state: tokio::sync::Mutex::new(ReloadState {
                    etag: version.etag.clone(),
                    checked_at: now,
                    unreadable_alerted: false,
                }),
            }),
            in_use: RwLock::new(Some(version)),
        })
    }

    /// The same source, checking at most once per `interval` instead of
    /// once a minute.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        if let Some(reload) = &mut self.reload {
            reload.interval = interval;
        }
        self
    }

    /// True when the configuration is reloaded from S3.
    pub fn reloads(&self) -> bool {
        self.reload.is_some()
    }

    /// The ETag and version id of the S3 document the configuration now in
    /// use was built from; `None` for a fixed configuration. A refused
    /// document never shows here.
    pub fn document_version(&self) -> Option<DocumentVersion> {
        self.in_use
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration now, without checking for a new document.
    pub fn config(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration to run an invocation with: checks for a new
    /// document first when a check is due. Call at the start of each
    /// invocation.
    pub async fn current(&self) -> Arc<Config> {
        self.check().await;
        self.config()
    }

    /// Checks for a new document when a check is due (see the module).
    pub async fn check(&self) -> CheckOutcome {
        let Some(reload) = &self.reload else {
            return CheckOutcome::Fixed;
        };
        let mut state = reload.state.lock().await;
        let now = reload.clock.now();
        // A clock that went backwards counts as due.
        if now
            .duration_since(state.checked_at)
            .is_ok_and(|elapsed| elapsed < reload.interval)
        {
            return CheckOutcome::NotDue;
        }
        state.checked_at = now;
        let fetched = fetch(&reload.s3, &reload.uri, state.etag.as_deref()).await;
        let (text, version) = match fetched {
            Ok(Fetched::NotModified) => {
                state.unreadable_alerted = false;
                return CheckOutcome::Unchanged;
            }
            Ok(Fetched::Document { text, version }) => (Ok(text), version),
            Err(Unread::NotText(version)) => (
                Err(ConfigError::new(
                    config::env::EXPORT_CONFIG,
                    format!("`{}` is not UTF-8 text", reload.uri),
                )),
                version,
            ),
            Err(Unread::TooLarge(version)) => (Err(too_large(&reload.uri)), version),
            Err(Unread::Failed(message)) => {
                tracing::warn!(uri = %reload.uri, %message, "cannot read the configuration document: the last good one stays");
                if !state.unreadable_alerted {
                    state.unreadable_alerted = true;
                    let diagnosis = Diagnosis {
                        code: "ConfigUnreadable".to_owned(),
                        problem: Problem::Other,
                        summary: format!(
                            "The configuration document `{}` cannot be read: {message}; the last good configuration stays in use",
                            reload.uri
                        ),
                        remedy: "Let the function's role `s3:GetObject` the document, or restore it; it is read again every minute.".to_owned(),
                        bucket_policy: None,
                        kms_key_policy_statement: None,
                    };
                    alert(&reload.alerter, &diagnosis).await;
                }
                return CheckOutcome::Unreadable { message };
            }
        };
        state.unreadable_alerted = false;
        // A bad document is not read (nor alerted) again until it changes.
        state.etag = version.etag.clone();
        let etag = version.etag.clone();
        let built = text.and_then(|text| {
            let lookup = reload.lookup.clone();
            Config::from_sources(move |name| lookup(name), Some(&text))
        });
        match built {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                *self.in_use.write().unwrap_or_else(|p| p.into_inner()) = Some(version.clone());
                tracing::info!(
                    uri = %reload.uri,
                    etag = etag.as_deref().unwrap_or(""),
                    version_id = version.version_id.as_deref().unwrap_or(""),
                    "configuration reloaded"
                );
                CheckOutcome::Reloaded {
                    etag,
                    version_id: version.version_id,
                }
            }
            Err(error) => {
                tracing::error!(
                    uri = %reload.uri,
                    etag = etag.as_deref().unwrap_or(""),
                    version_id = version.version_id.as_deref().unwrap_or(""),
                    %error,
                    "new configuration refused: the last good one stays"
                );
                let diagnosis = Diagnosis {
                    code: "InvalidConfiguration".to_owned(),
                    problem: Problem::Other,
                    summary: format!(
                        "The new configuration document `{}` (ETag {}) is refused: {error}; the last good configuration stays in use",
                        reload.uri,
                        etag.as_deref().unwrap_or("unknown")
                    ),
                    remedy: format!(
                        "Fix `{}` and upload the document again; it is picked up within a minute.",
                        error.field
                    ),
                    bucket_policy: None,
                    kms_key_policy_statement: None,
                };
                alert(&reload.alerter, &diagnosis).await;
                CheckOutcome::Rejected { etag, error }
            }
        }
    }
}

async fn alert(alerter: &Alerter, diagnosis: &Diagnosis) {
    if let Err(error) = alerter.invocation().alert(ALERT_NAME, diagnosis).await {
        tracing::error!(%error, "configuration alert not published");
    }
}

/// The error of a document larger than [`MAX_DOCUMENT_BYTES`].
fn too_large(uri: &str) -> ConfigError {
    ConfigError::new(
        config::env::EXPORT_CONFIG,
        format!(
            "`{uri}` is larger than {MAX_DOCUMENT_BYTES} bytes, the most a configuration document may have"
        ),
    )
}

enum Fetched {
    NotModified,
    Document {
        text: String,
        version: DocumentVersion,
    },
}

enum Unread {
    NotText(DocumentVersion),
    TooLarge(DocumentVersion),
    Failed(String),
}

async fn fetch(s3: &aws_sdk_s3::Client, uri: &str, etag: Option<&str>) -> Result<Fetched, Unread> {
    let (bucket, key) = config::parse_s3_uri(uri)
        .ok_or_else(|| Unread::Failed(format!("`{uri}` is not `s3://bucket/key`")))?;
    let sent = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_if_none_match(etag.map(str::to_owned))
        .send()
        .await;
    let object = match sent {
        Ok(object) => object,
        Err(SdkError::ServiceError(error)) if error.raw().status().as_u16() == 304 => {
            return Ok(Fetched::NotModified);
        }
        Err(error) => {
            return Err(Unread::Failed(
                aws_sdk_s3::error::DisplayErrorContext(error).to_string(),
            ));
        }
    };
    let version = DocumentVersion {
        etag: object.e_tag.clone(),
        version_id: object.version_id.clone(),
    };
    // Stops at the first chunk past the limit, whatever Content-Length says.
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| Unread::Failed(error.to_string()))?;
        if bytes.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(Unread::TooLarge(version));
        }
        bytes.extend_from_slice(&chunk);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Fetched::Document { text, version }),
        Err(_) => Err(Unread::NotText(version)),
    }
}
