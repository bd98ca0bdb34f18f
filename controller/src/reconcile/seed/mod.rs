//! The reconcilers of the seed's simplified API ([`crate::api::seed`]): each translates its
//! object onto dataprotection objects with [`crate::builder::seed`], owned by it (a
//! controller ownerReference, so deleting the seed object deletes them), and writes the
//! result back into the seed object's status in the seed's words: a phase, a message
//! naming the field at fault, and a `Ready` condition.
//!
//! What is shared: the owner reference, "create or bring the spec up to date", reading
//! any object's status as JSON, and the `Ready` condition.

pub mod backup;
pub mod backuppolicy;
pub mod backupschedule;
pub mod restore;

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::Api;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::seed::CONDITION_READY;
use crate::error::Result;
use crate::reconcile::{create_if_absent, patch_object, set_condition};

/// A controller owner reference to `owner`.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Creates `desired` when absent; otherwise merges its labels, annotations and spec into
/// the stored object when they differ. Returns the stored object.
///
/// # Errors
/// The API error.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let (found, created) = create_if_absent(api, desired).await?;
    if created {
        return Ok(found);
    }
    let want = serde_json::to_value(desired).unwrap_or_default();
    let have = serde_json::to_value(&found).unwrap_or_default();
    let mut patch = json!({});
    for key in ["labels", "annotations"] {
        if let Some(Value::Object(w)) = want["metadata"].get(key) {
            let differs = w
                .iter()
                .any(|(k, v)| have["metadata"][key].get(k) != Some(v));
            if differs {
                patch["metadata"][key] = Value::Object(w.clone());
            }
        }
    }
    if want.get("spec").is_some() && !contains(&have["spec"], &want["spec"]) {
        patch["spec"] = want["spec"].clone();
    }
    if patch == json!({}) {
        return Ok(found);
    }
    let name = desired.meta().name.clone().unwrap_or_default();
    patch_object(api, &name, found.meta().resource_version.as_deref(), patch).await
}

/// Whether every leaf of `want` is in `have` (the server adds defaults; those are fine).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| v.is_null() || h.get(k).is_some_and(|hv| contains(hv, v))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (h, w) => h == w,
    }
}

/// A text at `pointer` in `obj`'s JSON.
pub fn text_at<K: Serialize>(obj: &K, pointer: &str) -> Option<String> {
    serde_json::to_value(obj)
        .ok()?
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The message of the first condition of `obj` that is `False` (its reason when empty).
pub fn false_condition<K: Serialize>(obj: &K) -> Option<String> {
    let v = serde_json::to_value(obj).ok()?;
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["status"] == "False")
        .map(|c| {
            let msg = c["message"].as_str().unwrap_or_default();
            if msg.is_empty() {
                c["reason"].as_str().unwrap_or_default().to_string()
            } else {
                msg.to_string()
            }
        })
}

/// `conditions` with `Ready` set for `phase` (True when `ready`) and `message`.
pub fn ready_condition(
    conditions: Option<Vec<Condition>>,
    ready: bool,
    phase: &str,
    message: &str,
    generation: Option<i64>,
) -> Option<Vec<Condition>> {
    let mut c = conditions.unwrap_or_default();
    set_condition(
        &mut c,
        CONDITION_READY,
        if ready { "True" } else { "False" },
        phase,
        message,
        generation,
        chrono::Utc::now(),
    );
    Some(c)
}

/// Now, as the seed's status times are written (RFC 3339, seconds, `Z`).
pub fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_defaults_do_not_count_as_a_difference() {
        let have = json!({"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}});
        assert!(contains(&have, &json!({"b": {"c": [1, {"d": 2}]}})));
        assert!(!contains(&have, &json!({"b": {"c": [1]}})));
        assert!(!contains(&have, &json!({"a": 2})));
        assert!(!contains(&have, &json!({"x": 1})));
    }
}
