//! Which lake a data directory's checkpoint belongs to.
//!
//! The checkpoint names flushes of one lake. A pipeline whose lake is on object storage
//! records where (`<data-dir>/lake.json`: URL, endpoint and region, never credentials), so
//! that `tickflow sql` and `tickflow compact` find it from the data directory alone, and so
//! that a config pointing the same data directory at another lake is refused instead of
//! replaying into it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tickflow_lake::{Lake, ObjectLake};

use crate::{Error, Result};

/// What `lake.json` holds.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Recorded {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lake.json")
}

fn recorded(data_dir: &Path) -> Result<Option<Recorded>> {
    let path = record_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::LakeLocation {
            path,
            message: format!("not a lake location: {e}"),
        })
}

/// The lake a pipeline writes: `object` when the config puts it on object storage (recorded
/// on first use), else `<data-dir>/lake`. `has_history` says whether the checkpoint already
/// names flushes, which then must be in the same lake.
///
/// # Errors
/// The config names another lake than the one the data directory's checkpoint belongs to,
/// or the lake cannot be opened.
pub(crate) fn open_for_pipeline(
    data_dir: &Path,
    local: Option<&Path>,
    object: Option<&ObjectLake>,
    has_history: bool,
) -> Result<Lake> {
    let recorded = recorded(data_dir)?;
    let mismatch = |message: String| Error::LakeLocation {
        path: record_path(data_dir),
        message,
    };
    match (object, recorded) {
        (None, None) => Ok(Lake::open(
            local.map_or_else(|| data_dir.join("lake"), Path::to_path_buf),
        )?),
        (None, Some(r)) => Err(mismatch(format!(
            "this data directory's lake is at {}: set lake.url to it, or use another data directory",
            r.url
        ))),
        (Some(o), Some(r)) if r.url.trim_end_matches('/') != o.url.trim_end_matches('/') => {
            Err(mismatch(format!(
                "this data directory's lake is at {}, not {}: its checkpoint counts that lake's flushes; use another data directory for a new lake",
                r.url, o.url
            )))
        }
        (Some(o), Some(r)) => {
            let lake = Lake::open_object(o)?;
            // The same bucket reached another way (a new endpoint or region) is recorded,
            // so offline tools follow.
            if r.endpoint != o.endpoint || r.region != o.region {
                record(data_dir, o)?;
            }
            Ok(lake)
        }
        (Some(o), None) if has_history => Err(mismatch(format!(
            "this data directory's lake is {}, not {}: its checkpoint counts that lake's flushes; use another data directory for a new lake",
            data_dir.join("lake").display(),
            o.url
        ))),
        (Some(o), None) => {
            let lake = Lake::open_object(o)?;
            record(data_dir, o)?;
            Ok(lake)
        }
    }
}

/// Records where the data directory's lake is, durably: a checkpoint must never outlive
/// the record of the lake it counts.
fn record(data_dir: &Path, object: &ObjectLake) -> Result<()> {
    let record = Recorded {
        url: object.url.clone(),
        endpoint: object.endpoint.clone(),
        region: object.region.clone(),
    };
    let path = record_path(data_dir);
    let text = serde_json::to_string_pretty(&record).unwrap_or_default();
    crate::checkpoint::write_durably(&path, text.as_bytes()).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// The lake of a data directory for a process that only reads or compacts it: the one
/// recorded in `lake.json` (credentials from the AWS environment), else `<data-dir>/lake`.
///
/// # Errors
/// The record is unreadable or the lake cannot be opened.
pub fn open_recorded(data_dir: &Path) -> Result<Lake> {
    match recorded(data_dir)? {
        None => Ok(Lake::open(data_dir.join("lake"))?),
        Some(r) => Ok(Lake::open_object(&ObjectLake {
            url: r.url,
            endpoint: r.endpoint,
            region: r.region,
            ..ObjectLake::default()
        })?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(url: &str) -> ObjectLake {
        ObjectLake {
            url: url.into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..ObjectLake::default()
        }
    }

    #[test]
    fn a_data_directory_keeps_the_lake_its_checkpoint_counts() {
        let dir = tempfile::tempdir().unwrap();
        // A local lake with history is not moved to S3 by a config.
        let err = open_for_pipeline(dir.path(), None, Some(&s3("s3://b/p")), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lake is ") && err.contains("not s3://b/p"),
            "{err}"
        );
        assert!(!record_path(dir.path()).exists(), "nothing recorded");
        // A recorded S3 lake is not left for the local one, nor for another bucket.
        record(dir.path(), &s3("s3://b/p")).unwrap();
        let err = open_for_pipeline(dir.path(), None, None, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lake is at s3://b/p: set lake.url"), "{err}");
        let err = open_for_pipeline(dir.path(), None, Some(&s3("s3://b/other")), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lake is at s3://b/p, not s3://b/other"),
            "{err}"
        );
        // The record holds where, never the credentials.
        let mut with_keys = s3("s3://b/p");
        with_keys.secret_access_key = Some("hush-0123456789".into());
        record(dir.path(), &with_keys).unwrap();
        let text = std::fs::read_to_string(record_path(dir.path())).unwrap();
        assert!(
            !text.contains("hush") && text.contains("s3://b/p"),
            "{text}"
        );
        assert_eq!(recorded(dir.path()).unwrap().unwrap().url, "s3://b/p");
        // A local lake stays local.
        let plain = tempfile::tempdir().unwrap();
        let lake = open_for_pipeline(plain.path(), None, None, false).unwrap();
        assert_eq!(lake.root(), plain.path().join("lake"));
        assert!(lake.object_store().is_none());
    }
}
