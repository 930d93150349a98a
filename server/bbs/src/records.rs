//! What every backend does the same way with a record: encode and decode its
//! JSON, check and advance its modification tag, and name the errors.

use lattice_models::ModificationTag;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{RecordKind, StoreError, StoreResult};

pub(crate) fn encode(kind: RecordKind, key: &str, record: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(record)
        .map_err(|e| StoreError::Backend(format!("cannot encode {kind} {key:?}: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(
    kind: RecordKind,
    key: &str,
    json: &str,
) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        kind,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes the `(key, json)` rows of a list, skipping (and logging) every
/// record that cannot be decoded: one record written by a newer version, or
/// damaged, must not hide every other record from the converger, the rep,
/// the route-emitter and `ltc list`. A single read (`get`) still reports it
/// as [`StoreError::Corrupt`].
pub(crate) fn decode_readable<T: DeserializeOwned>(
    kind: RecordKind,
    rows: &[(String, String)],
) -> Vec<T> {
    rows.iter()
        .filter_map(|(key, json)| match decode(kind, key, json) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::error!(%kind, key = %key, error = %err, "skipping an unreadable record in a list");
                None
            }
        })
        .collect()
}

/// Fails with `Conflict` unless the stored tag is the one the writer read.
pub(crate) fn check_tag(
    kind: RecordKind,
    key: &str,
    stored: &ModificationTag,
    expected: &ModificationTag,
) -> StoreResult<()> {
    if stored == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            kind,
            key: key.to_string(),
        })
    }
}

/// A fresh tag for a created record: a new epoch, so that a writer holding a
/// tag of an earlier record with the same key can never match.
pub(crate) fn fresh_tag() -> ModificationTag {
    ModificationTag {
        epoch: uuid::Uuid::new_v4().to_string(),
        index: 0,
    }
}

/// The tag after one more write. Wrapping after 2^32 writes of one record
/// could only confuse a writer holding a tag 2^32 writes old.
pub(crate) fn next_tag(tag: &ModificationTag) -> ModificationTag {
    ModificationTag {
        epoch: tag.epoch.clone(),
        index: tag.index.wrapping_add(1),
    }
}

pub(crate) fn not_found(kind: RecordKind, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        key: key.to_string(),
    }
}

pub(crate) fn already_exists(kind: RecordKind, key: &str) -> StoreError {
    StoreError::AlreadyExists {
        kind,
        key: key.to_string(),
    }
}

pub(crate) fn actual_key(process_guid: &str, index: i64) -> String {
    format!("{process_guid}/{index}")
}

/// The guarded statement of a write changes exactly its one row: the
/// transaction read the row with the same tag, so anything else means a
/// writer outside this process got in between.
pub(crate) fn ensure_one_row(kind: RecordKind, key: &str, rows: u64) -> StoreResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            kind,
            key: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_a_list_skips_the_record_it_cannot_decode() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let rows = vec![
            ("a".to_string(), "1".to_string()),
            ("deep".to_string(), deep),
            ("b".to_string(), "2".to_string()),
            ("text".to_string(), "\"x\"".to_string()),
        ];
        let items: Vec<i64> = decode_readable(RecordKind::Task, &rows);
        assert_eq!(items, vec![1, 2]);
    }
}
