//! Go `text/template` with the sprig function library, for KubeBlocks StorageProvider
//! templates.
//!
//! KubeBlocks renders a StorageProvider's four templates (`storageClassTemplate`,
//! `persistentVolumeClaimTemplate`, `datasafedConfigTemplate`,
//! `csiDriverSecretTemplate`) with Go's `text/template` and `sprig.TxtFuncMap()` over
//! `{Parameters, CSIDriverSecretRef{Name, Namespace}, GeneratedStorageClassName}`. To
//! accept the providers users already have and render them byte for byte as KubeBlocks
//! does, this module implements Go's template language faithfully rather than a
//! look-alike: trim markers, comments, pipelines, `:=` and `=`, `if/else if/else`,
//! `range` (with `else`, `break`, `continue`, two variables, integers), `with`/`else
//! with`, `define`/`template`/`block`, Go's truth rules, `<no value>`, the builtins,
//! `fmt`'s printing, and Go's error messages.
//!
//! Module map:
//! - [`lex`], [`parse`], [`node`]: text to trees;
//! - [`exec`]: trees over data;
//! - [`value`]: the Go values templates see; [`fmt`]: Go's printing;
//! - [`funcs`]: function signatures and maps; `builtins`; [`sprig`]: sprig;
//! - [`provider`]: KubeBlocks' render context and `renderTemplate`;
//! - [`repo_params`]: BackupRepo parameter merge and digest.
//!
//! Differences from Go, all outside what StorageProvider templates do: strings are
//! UTF-8 (byte-slicing that splits a character yields U+FFFD); no complex numbers,
//! unsigned integers, methods or function values in data; map keys are strings;
//! `%#v`, `%p` and hexadecimal float formats are not implemented; hostile templates
//! meet limits Go does not have ([`Limits`]).
//!
//! ```
//! use dprepo_controller::template::{Template, sprig, Value};
//! let mut t = Template::new("demo").funcs(sprig::txt_func_map());
//! t.parse(r#"{{- $e := .endpoint }}{{ if not $e }}{{ $e = printf "s3.%s.amazonaws.com" .region }}{{ end }}{{ $e | upper }}"#).unwrap();
//! let data = Value::from_json(&serde_json::json!({"region": "us-west-1"}));
//! assert_eq!(t.execute(&data).unwrap(), "S3.US-WEST-1.AMAZONAWS.COM");
//! ```

pub mod builtins;
pub mod error;
pub mod exec;
pub mod fmt;
pub mod funcs;
pub mod lex;
pub mod node;
pub mod parse;
pub mod provider;
pub mod repo_params;
pub mod sprig;
pub mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use error::Error;
pub use funcs::{Ctx, Func, FuncMap, FuncResult};
pub use value::{GoType, Value};

/// What a missing map key yields (Go's `missingkey` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// No value: prints `<no value>` (Go's default, and KubeBlocks' renderer's).
    #[default]
    Default,
    /// The zero value of the map's element type.
    Zero,
    /// An execution error.
    Error,
}

/// Bounds on one execution, so that no template text or data can make rendering
/// run away. Go has none of these except a template call depth of 100000.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest output, in bytes.
    pub max_output_bytes: usize,
    /// Largest string or list a function may build (bytes or elements).
    pub max_value_bytes: usize,
    /// Most nodes, commands and range iterations evaluated.
    pub max_steps: u64,
    /// Deepest nesting of branches, parenthesized pipelines and template calls.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_output_bytes: 1 << 20,
            max_value_bytes: 1 << 20,
            max_steps: 1_000_000,
            max_depth: 150,
        }
    }
}

impl Limits {
    /// Set the output limit.
    pub fn with_max_output_bytes(mut self, n: usize) -> Limits {
        self.max_output_bytes = n;
        self
    }

    /// Set the step limit.
    pub fn with_max_steps(mut self, n: u64) -> Limits {
        self.max_steps = n;
        self
    }
}

/// A set of parsed templates sharing one function map (Go's `*template.Template`).
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    funcs: FuncMap,
    trees: BTreeMap<String, Arc<node::Tree>>,
    missing_key: MissingKey,
    limits: Limits,
}

impl Template {
    /// An empty template set whose main template is `name`, with the builtins only.
    pub fn new(name: &str) -> Template {
        Template {
            name: name.to_string(),
            funcs: FuncMap::new(),
            trees: BTreeMap::new(),
            missing_key: MissingKey::Default,
            limits: Limits::default(),
        }
    }

    /// Add functions (before parsing: names are checked at parse time).
    pub fn funcs(mut self, funcs: FuncMap) -> Template {
        self.funcs.extend(&funcs);
        self
    }

    /// Set the `missingkey` option.
    pub fn missing_key(mut self, m: MissingKey) -> Template {
        self.missing_key = m;
        self
    }

    /// Set the execution limits.
    pub fn limits(mut self, l: Limits) -> Template {
        self.limits = l;
        self
    }

    /// Parse `text` as the body of this template, adding the templates it defines.
    /// As in Go, a later parse replaces earlier definitions of the same names, except
    /// that an empty (white space only) body never replaces a non-empty one.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the line and column: syntax errors, undefined functions
    /// or variables, nesting beyond [`parse::MAX_NESTING`]. Nothing is added then.
    pub fn parse(&mut self, text: &str) -> Result<&mut Template, Error> {
        let mut set = BTreeMap::new();
        let funcs = &self.funcs;
        let builtins = exec::builtin_map();
        let has = |n: &str| funcs.contains(n) || builtins.contains(n);
        parse::parse(&self.name, text, &has, &mut set)?;
        for (name, tree) in set {
            match self.trees.get(&name) {
                Some(_) if tree.is_empty() => {}
                _ => {
                    self.trees.insert(name, Arc::new(tree));
                }
            }
        }
        Ok(self)
    }

    /// Parse the template `name` from `text` into this set (Go's `t.New(name).Parse`).
    ///
    /// # Errors
    /// As [`parse`](Template::parse).
    pub fn parse_named(&mut self, name: &str, text: &str) -> Result<&mut Template, Error> {
        let main = std::mem::replace(&mut self.name, name.to_string());
        let r = self.parse(text).map(|_| ());
        self.name = main;
        r.map(|_| self)
    }

    /// Names of the templates in the set.
    pub fn defined_templates(&self) -> Vec<&str> {
        self.trees.keys().map(String::as_str).collect()
    }

    /// Execute the main template over `data`.
    ///
    /// # Errors
    /// [`Error::Exec`] at the failing node, or [`Error::Template`] when the main
    /// template was never parsed.
    pub fn execute(&self, data: &Value) -> Result<String, Error> {
        self.execute_template(&self.name, data)
    }

    /// Execute the named template of the set over `data`.
    ///
    /// # Errors
    /// As [`execute`](Template::execute).
    pub fn execute_template(&self, name: &str, data: &Value) -> Result<String, Error> {
        let env = exec::Env {
            trees: &self.trees,
            funcs: &self.funcs,
            builtins: exec::builtin_map(),
            missing_key: self.missing_key,
            limits: &self.limits,
        };
        exec::execute(&env, name, data)
    }
}

#[cfg(test)]
mod tests;
