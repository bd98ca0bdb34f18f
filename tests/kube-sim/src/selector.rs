//! Label and field selectors, parsed with the real server's grammar and refusals.
//!
//! Label selectors: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k>n`, `k<n`. Field selectors: `f=v`, `f==v`, `f!=v` with `\` escapes; the fields a kind
//! supports are listed by [`crate::resource::ResourceType::field_labels`] and anything else is
//! refused with 400 `field label not supported`.

use crate::error::ApiError;
use crate::validation::names;
use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    /// `k` (exists).
    Exists(String),
    /// `!k`.
    NotExists(String),
    /// `k in (..)` / `k=v`.
    In(String, Vec<String>),
    /// `k notin (..)` / `k!=v`.
    NotIn(String, Vec<String>),
    /// `k>n`.
    Gt(String, i64),
    /// `k<n`.
    Lt(String, i64),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn bad(msg: String) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {msg}"))
}

fn check_key(k: &str) -> Result<(), ApiError> {
    let errs = names::qualified_name(k);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(bad(format!(
            "key: Invalid value: {k:?}: {}",
            errs.join("; ")
        )))
    }
}

fn check_value(k: &str, v: &str) -> Result<(), ApiError> {
    let errs = names::label_value(v);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(bad(format!(
            "values[0][{k}]: Invalid value: {v:?}: {}",
            errs.join("; ")
        )))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    ///
    /// # Errors
    /// 400 BadRequest on bad syntax, keys or values.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad(format!("found '', expected: identifier in {s:?}")));
            }
            if let Some(k) = p.strip_prefix('!') {
                let k = k.trim();
                check_key(k)?;
                reqs.push(LabelReq::NotExists(k.to_string()));
                continue;
            }
            // set-based
            let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
            if words.len() == 2 {
                let rest = words[1].trim_start();
                let (op, after) = if let Some(a) = rest.strip_prefix("notin") {
                    ("notin", a)
                } else if let Some(a) = rest.strip_prefix("in") {
                    ("in", a)
                } else {
                    ("", rest)
                };
                if !op.is_empty() {
                    let after = after.trim();
                    let inner = after
                        .strip_prefix('(')
                        .and_then(|a| a.strip_suffix(')'))
                        .ok_or_else(|| bad(format!("found '{after}', expected: '('")))?;
                    let k = words[0];
                    check_key(k)?;
                    let mut vals = Vec::new();
                    for v in inner.split(',') {
                        let v = v.trim();
                        check_value(k, v)?;
                        vals.push(v.to_string());
                    }
                    reqs.push(if op == "in" {
                        LabelReq::In(k.into(), vals)
                    } else {
                        LabelReq::NotIn(k.into(), vals)
                    });
                    continue;
                }
            }
            let (k, op, v) = if let Some(i) = p.find("!=") {
                (&p[..i], "!=", &p[i + 2..])
            } else if let Some(i) = p.find("==") {
                (&p[..i], "=", &p[i + 2..])
            } else if let Some(i) = p.find('=') {
                (&p[..i], "=", &p[i + 1..])
            } else if let Some(i) = p.find('>') {
                (&p[..i], ">", &p[i + 1..])
            } else if let Some(i) = p.find('<') {
                (&p[..i], "<", &p[i + 1..])
            } else {
                (p, "", "")
            };
            let k = k.trim();
            let v = v.trim();
            check_key(k)?;
            match op {
                "" => reqs.push(LabelReq::Exists(k.into())),
                "=" => {
                    check_value(k, v)?;
                    reqs.push(LabelReq::In(k.into(), vec![v.into()]))
                }
                "!=" => {
                    check_value(k, v)?;
                    reqs.push(LabelReq::NotIn(k.into(), vec![v.into()]))
                }
                _ => {
                    let n: i64 = v.parse().map_err(|_| {
                        bad(format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                        ))
                    })?;
                    reqs.push(if op == ">" {
                        LabelReq::Gt(k.into(), n)
                    } else {
                        LabelReq::Lt(k.into(), n)
                    })
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels + matchExpressions).
    ///
    /// # Errors
    /// A message when an operator is unknown.
    pub fn from_object(sel: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(LabelReq::In(
                    k.clone(),
                    vec![v.as_str().unwrap_or_default().to_string()],
                ));
            }
        }
        if let Some(me) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in me {
                let k = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let vals: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                match e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" => reqs.push(LabelReq::In(k, vals)),
                    "NotIn" => reqs.push(LabelReq::NotIn(k, vals)),
                    "Exists" => reqs.push(LabelReq::Exists(k)),
                    "DoesNotExist" => reqs.push(LabelReq::NotExists(k)),
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"))
                    }
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldReq {
    /// The field label (`metadata.name`, `status.phase` ...).
    pub field: String,
    /// Whether the operator is `!=`.
    pub negate: bool,
    /// The value.
    pub value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<FieldReq>);

fn unescape_split(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, ApiError> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(n @ ('\\' | ',' | '=' | '!')) => out.push(n),
                Some(n) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: invalid escape sequence: \\{n}"
                    )))
                }
                None => {
                    return Err(ApiError::bad_request(
                        "invalid field selector: unterminated escape sequence".to_string(),
                    ))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter and checks each field against `supported`.
    ///
    /// # Errors
    /// 400 BadRequest on bad syntax or an unsupported field label.
    pub fn parse(s: &str, supported: &[String]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for term in unescape_split(s, ',') {
            let t = term.as_str();
            let (field, negate, value) = if let Some(i) = t.find("!=") {
                (&t[..i], true, &t[i + 2..])
            } else if let Some(i) = t.find("==") {
                (&t[..i], false, &t[i + 2..])
            } else if let Some(i) = t.find('=') {
                (&t[..i], false, &t[i + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let field = field.trim().to_string();
            if !supported.iter().any(|f| f == &field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push(FieldReq {
                field,
                negate,
                value: unescape(value)?,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A `metadata.name=X` requirement's value, if the selector has one.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negate)
            .map(|r| r.value.as_str())
    }

    /// Whether the object satisfies every requirement; `get` returns a field label's value.
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|r| (get(&r.field) == r.value) != r.negate)
    }
}

/// The value of a field label on an object: a dotted path into the JSON, rendered as the
/// real server's field-set functions render it (absent = "", bools as "true"/"false").
pub fn field_value(obj: &Value, label: &str) -> String {
    // A few labels are not plain paths.
    let path: &str = match label {
        "source" => "source.component",
        "status.podIPs" => "status.podIP",
        other => other,
    };
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_ops() {
        let o = json!({"metadata": {"labels": {"app": "db", "tier": "back", "n": "5"}}});
        let t = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(t("app=db"));
        assert!(t("app==db,tier"));
        assert!(!t("app!=db"));
        assert!(t("env!=prod"));
        assert!(t("app in (db, web)"));
        assert!(!t("app notin (db)"));
        assert!(t("env notin (x)"));
        assert!(t("!env"));
        assert!(!t("!app"));
        assert!(t("n>4"));
        assert!(!t("n<4"));
        assert!(LabelSelector::parse("app=a b").is_err());
        assert!(LabelSelector::parse("app in db").is_err());
    }

    #[test]
    fn field_selector_refuses_unknown_fields() {
        let sup = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        let e = FieldSelector::parse("spec.x=1", &sup).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.x");
        let f = FieldSelector::parse("metadata.name=a\\,b", &sup).unwrap();
        assert_eq!(f.0[0].value, "a,b");
        let o = json!({"metadata": {"name": "a,b"}});
        assert!(f.matches(|l| field_value(&o, l)));
    }
}
