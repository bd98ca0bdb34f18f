//! The resource registry: every served group/version/resource, built-in and custom.
//!
//! A [`ResourceType`] carries what discovery publishes (kind, names, verbs, scope,
//! subresources) and what the REST layer needs to treat the kind as the real server
//! does (status subresource, generation, create-on-update, unconditional update, field
//! labels). Custom resources add their CRD version ([`crate::crd::CrdVersion`]).
//! Versions of one kind share storage: [`ResourceType::storage`] is `(group, plural)`
//! (events.k8s.io events share core events' storage and are converted on the way).

use crate::crd::CrdVersion;
use crate::store::GroupResource;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The standard verbs of a stored kind.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource (group, version, plural).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group ("" for core).
    pub group: String,
    /// Version served at this entry.
    pub version: String,
    /// Plural resource name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`cm`, `po` ...).
    pub short_names: Vec<String>,
    /// Categories (`all` ...).
    pub categories: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Subresources: `status`, `scale`, `log`, `exec`, `token`, `finalize` ...
    pub subresources: Vec<String>,
    /// Storage identity (shared by all versions of the kind).
    pub storage: GroupResource,
    /// For custom resources: the CRD's version data.
    pub crd: Option<Arc<CrdVersion>>,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether PUT creates a missing object.
    pub create_on_update: bool,
    /// Whether PUT without `resourceVersion` is accepted.
    pub unconditional_update: bool,
    /// Field labels accepted in field selectors beyond metadata.name/namespace.
    pub extra_field_labels: Vec<String>,
    /// Not stored: create-only review APIs answered on the spot.
    pub virtual_only: bool,
}

impl ResourceType {
    /// `group/version` or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the kind has a `/status` subresource.
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// Whether a verb is served on the main resource.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// All field labels a field selector may use.
    pub fn field_labels(&self) -> Vec<String> {
        let mut v = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        v.extend(self.extra_field_labels.iter().cloned());
        v
    }

    /// Whether this is a custom resource.
    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    generation: bool,
    create_on_update: bool,
    fields: &'static [&'static str],
}

const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced,
        short,
        categories: &[],
        subresources,
        generation: false,
        create_on_update: false,
        fields: &[],
    }
}

impl Builtin {
    const fn cat(mut self, c: &'static [&'static str]) -> Self {
        self.categories = c;
        self
    }
    const fn gen(mut self) -> Self {
        self.generation = true;
        self
    }
    const fn cou(mut self) -> Self {
        self.create_on_update = true;
        self
    }
    const fn fields(mut self, f: &'static [&'static str]) -> Self {
        self.fields = f;
        self
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const NEW_EVENT_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

fn builtins() -> Vec<Builtin> {
    vec![
        b(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &["status", "finalize"],
        )
        .fields(&["status.phase"]),
        b("", "v1", "secrets", "Secret", true, &[], &[]).fields(&["type"]),
        b("", "v1", "configmaps", "ConfigMap", true, &["cm"], &[]),
        b(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &["token"],
        ),
        b(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            &["status", "proxy"],
        )
        .cat(&["all"])
        .fields(&["spec.clusterIP", "spec.type"]),
        b("", "v1", "endpoints", "Endpoints", true, &["ep"], &[]),
        b(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            &["po"],
            &[
                "status",
                "log",
                "exec",
                "attach",
                "portforward",
                "binding",
                "eviction",
                "ephemeralcontainers",
                "resize",
            ],
        )
        .cat(&["all"])
        .fields(&[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ]),
        b(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            &["status"],
        ),
        b(
            "",
            "v1",
            "persistentvolumes",
            "PersistentVolume",
            false,
            &["pv"],
            &["status"],
        ),
        b("", "v1", "events", "Event", true, &["ev"], &[])
            .cou()
            .fields(EVENT_FIELDS),
        b(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            &["no"],
            &["status", "proxy"],
        )
        .fields(&["spec.unschedulable"]),
        b(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            true,
            &["quota"],
            &["status"],
        ),
        b(
            "",
            "v1",
            "limitranges",
            "LimitRange",
            true,
            &["limits"],
            &[],
        ),
        b("batch", "v1", "jobs", "Job", true, &[], &["status"])
            .cat(&["all"])
            .gen()
            .fields(&["status.successful"]),
        b(
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            true,
            &["cj"],
            &["status"],
        )
        .cat(&["all"])
        .gen(),
        b(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            &["status", "scale"],
        )
        .cat(&["all"])
        .gen(),
        b(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            &["status", "scale"],
        )
        .cat(&["all"])
        .gen(),
        b(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            &["status", "scale"],
        )
        .cat(&["all"])
        .gen()
        .fields(&["status.replicas"]),
        b(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            &["status"],
        )
        .cat(&["all"])
        .gen(),
        b(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            &[],
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            &[],
        )
        .cou(),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            &[],
        )
        .cou(),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            &[],
        )
        .cou(),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
        )
        .cou(),
        b(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
        )
        .cou(),
        b(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
            &["sc"],
            &[],
        ),
        b(
            "storage.k8s.io",
            "v1",
            "csidrivers",
            "CSIDriver",
            false,
            &[],
            &[],
        ),
        b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["status"],
        )
        .gen(),
        b("events.k8s.io", "v1", "events", "Event", true, &["ev"], &[])
            .cou()
            .fields(NEW_EVENT_FIELDS),
        b(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            &["status"],
        )
        .gen(),
        b(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
            false,
            &["pc"],
            &[],
        ),
    ]
}

fn virtuals() -> Vec<(&'static str, &'static str, &'static str, &'static str, bool)> {
    vec![
        (
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "v1",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        (
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
        ),
        (
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
    ]
}

/// Orders versions as Kubernetes does: GA before beta before alpha, higher numbers first,
/// then non-Kubernetes-style versions alphabetically.
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let re = regex::Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").expect("static regex");
    if let Some(c) = re.captures(v) {
        let major: i64 = c[1].parse().unwrap_or(0);
        let (tier, minor) = match c.get(2).map(|m| m.as_str()) {
            None => (0, 0),
            Some("beta") => (1, c[3].parse().unwrap_or(0)),
            _ => (2, c[3].parse().unwrap_or(0)),
        };
        (tier, -major, -minor, String::new())
    } else {
        (3, 0, 0, v.to_string())
    }
}

/// All served resources.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        for bi in builtins() {
            let storage = if bi.group == "events.k8s.io" {
                (String::new(), "events".to_string())
            } else {
                (bi.group.to_string(), bi.plural.to_string())
            };
            let mut subresources: Vec<String> =
                bi.subresources.iter().map(|s| s.to_string()).collect();
            subresources.sort();
            r.insert(ResourceType {
                group: bi.group.into(),
                version: bi.version.into(),
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                kind: bi.kind.into(),
                list_kind: format!("{}List", bi.kind),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                categories: bi.categories.iter().map(|s| s.to_string()).collect(),
                verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
                subresources,
                storage,
                crd: None,
                has_generation: bi.generation,
                create_on_update: bi.create_on_update,
                unconditional_update: bi.kind != "CustomResourceDefinition",
                extra_field_labels: bi.fields.iter().map(|s| s.to_string()).collect(),
                virtual_only: false,
            });
        }
        for (g, v, p, k, ns) in virtuals() {
            r.insert(ResourceType {
                group: g.into(),
                version: v.into(),
                plural: p.into(),
                singular: k.to_lowercase(),
                kind: k.into(),
                list_kind: format!("{k}List"),
                namespaced: ns,
                short_names: vec![],
                categories: vec![],
                verbs: vec!["create".into()],
                subresources: vec![],
                storage: (g.into(), p.into()),
                crd: None,
                has_generation: false,
                create_on_update: false,
                unconditional_update: true,
                extra_field_labels: vec![],
                virtual_only: true,
            });
        }
        r
    }

    /// Adds or replaces one entry.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(
            (t.group.clone(), t.version.clone(), t.plural.clone()),
            Arc::new(t),
        );
    }

    /// Removes every version of a custom resource's storage.
    pub fn remove_storage(&mut self, storage: &GroupResource) {
        self.types
            .retain(|_, t| !(t.crd.is_some() && &t.storage == storage));
    }

    /// Looks a resource up by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The preferred version's entry for a storage identity.
    pub fn by_storage(&self, storage: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .filter(|t| &t.storage == storage && t.group == storage.0)
            .min_by_key(|t| version_priority(&t.version))
            .cloned()
    }

    /// Finds the entry for an apiVersion and kind (owner references, bindings).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (g, v) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.types
            .values()
            .find(|t| t.group == g && t.version == v && t.kind == kind)
            .cloned()
    }

    /// Every entry.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// The groups with their versions, preferred first (core group excluded).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            if t.group.is_empty() {
                continue;
            }
            let vs = m.entry(t.group.clone()).or_default();
            if !vs.contains(&t.version) {
                vs.push(t.version.clone());
            }
        }
        let mut out: Vec<(String, Vec<String>)> = m
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by_key(|v| version_priority(v));
                (g, vs)
            })
            .collect();
        // Built-in groups first, in a stable order, then custom groups alphabetically.
        let builtin_order = [
            "apps",
            "events.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "batch",
            "policy",
            "rbac.authorization.k8s.io",
            "storage.k8s.io",
            "apiextensions.k8s.io",
            "scheduling.k8s.io",
            "coordination.k8s.io",
        ];
        out.sort_by_key(|(g, _)| {
            (
                builtin_order
                    .iter()
                    .position(|b| b == g)
                    .unwrap_or(builtin_order.len()),
                g.clone(),
            )
        });
        out
    }

    /// The resources served at one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .values()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "foo", "v2"];
        v.sort_by_key(|x| version_priority(x));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn events_share_storage() {
        let r = Registry::builtin();
        let a = r.get("", "v1", "events").unwrap();
        let b = r.get("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(a.storage, b.storage);
    }
}
