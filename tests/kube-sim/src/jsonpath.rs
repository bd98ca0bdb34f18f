//! The Kubernetes JSONPath dialect, as far as printer columns need it: `{.a.b}`,
//! `['key']`, `[n]`, `[-n]`, `[a:b]`, `[*]`, `.*`, `..key` and filters
//! `[?(@.type=="Ready")]` (`==`, `!=`, `<`, `>`, `<=`, `>=`, existence).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `.key` / `['key']`.
    Field(String),
    /// `[n]` (negative counts from the end).
    Index(i64),
    /// `[a:b]`.
    Slice(Option<i64>, Option<i64>),
    /// `[*]` / `.*`.
    Wildcard,
    /// `..key`.
    Recursive(String),
    /// `[?(@.path op literal)]`.
    Filter(Vec<Step>, String, Option<Value>),
}

/// A parsed template: literal text and paths.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text outside braces.
    Text(String),
    /// A `{...}` path.
    Path(Vec<Step>),
}

/// Parses a template such as `{.status.phase}`.
///
/// # Errors
/// A message describing the syntax error.
pub fn parse(template: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            None => {
                out.push(Segment::Text(rest.to_string()));
                break;
            }
            Some(i) => {
                if i > 0 {
                    out.push(Segment::Text(rest[..i].to_string()));
                }
                let end = rest[i..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed action in {template:?}"))?
                    + i;
                out.push(Segment::Path(parse_path(&rest[i + 1..end])?));
                rest = &rest[end + 1..];
            }
        }
    }
    Ok(out)
}

fn parse_path(p: &str) -> Result<Vec<Step>, String> {
    let p = p.trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut steps = Vec::new();
    let ident = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && !matches!(chars[*i], '.' | '[') {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if i + 1 < chars.len() && chars[i + 1] == '.' {
                    i += 2;
                    let name = ident(&mut i);
                    if name.is_empty() {
                        return Err("recursive descent needs a key".into());
                    }
                    steps.push(Step::Recursive(name));
                } else {
                    i += 1;
                    let name = ident(&mut i);
                    match name.as_str() {
                        "" => {}
                        "*" => steps.push(Step::Wildcard),
                        _ => steps.push(Step::Field(name)),
                    }
                }
            }
            '[' => {
                let close =
                    find_close(&chars, i).ok_or_else(|| format!("unterminated array in {p:?}"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = close + 1;
            }
            _ => {
                let name = ident(&mut i);
                steps.push(Step::Field(name));
            }
        }
    }
    Ok(steps)
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if *c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(*c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_literal(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if let Some(q) = s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
        return Ok(Value::String(q.to_string()));
    }
    if let Some(q) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return Ok(Value::String(q.to_string()));
    }
    if s == "true" || s == "false" {
        return Ok(Value::Bool(s == "true"));
    }
    serde_json::from_str::<Value>(s).map_err(|_| format!("unrecognized literal {s:?}"))
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
        let f = f.trim();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some((l, r)) = f.split_once(op) {
                let path = l
                    .trim()
                    .strip_prefix('@')
                    .ok_or("filter must start with @")?;
                return Ok(Step::Filter(
                    parse_path(path)?,
                    op.to_string(),
                    Some(parse_literal(r)?),
                ));
            }
        }
        let path = f.strip_prefix('@').ok_or("filter must start with @")?;
        return Ok(Step::Filter(parse_path(path)?, String::new(), None));
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
        return Ok(Step::Field(q.to_string()));
    }
    if let Some(q) = inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return Ok(Step::Field(q.to_string()));
    }
    if let Some((a, b)) = inner.split_once(':') {
        let n = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| format!("invalid array index {s:?}"))
            }
        };
        return Ok(Step::Slice(n(a)?, n(b.split(':').next().unwrap_or(""))?));
    }
    inner
        .parse::<i64>()
        .map(Step::Index)
        .map_err(|_| format!("invalid array index {inner:?}"))
}

fn cmp(a: &Value, op: &str, b: &Value) -> bool {
    match op {
        "==" => a == b || (a.as_f64().is_some() && a.as_f64() == b.as_f64()),
        "!=" => a != b,
        _ => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return false;
            };
            match op {
                "<" => x < y,
                ">" => x > y,
                "<=" => x <= y,
                ">=" => x >= y,
                _ => false,
            }
        }
    }
}

fn recurse<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key) {
                out.push(x);
            }
            for c in m.values() {
                recurse(c, key, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                recurse(c, key, out);
            }
        }
        _ => {}
    }
}

/// Evaluates a path against a value; returns every match.
pub fn eval<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for st in steps {
        let mut next = Vec::new();
        for v in cur {
            match st {
                Step::Field(f) => {
                    if let Some(x) = v.get(f) {
                        next.push(x)
                    }
                }
                Step::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if idx >= 0 {
                            if let Some(x) = a.get(idx as usize) {
                                next.push(x)
                            }
                        }
                    }
                }
                Step::Slice(s, e) => {
                    if let Some(a) = v.as_array() {
                        let len = a.len() as i64;
                        let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                        let s = norm(s.unwrap_or(0));
                        let e = norm(e.unwrap_or(len));
                        if s < e {
                            next.extend(a[s as usize..e as usize].iter());
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Recursive(k) => recurse(v, k, &mut next),
                Step::Filter(path, op, lit) => {
                    if let Some(a) = v.as_array() {
                        for it in a {
                            let got = eval(path, it);
                            let ok = match lit {
                                None => !got.is_empty(),
                                Some(l) => got.first().is_some_and(|g| cmp(g, op, l)),
                            };
                            if ok {
                                next.push(it);
                            }
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(t: &str) -> Vec<Step> {
        match &parse(t).unwrap()[0] {
            Segment::Path(p) => p.clone(),
            _ => panic!(),
        }
    }

    #[test]
    fn evaluates_printer_column_paths() {
        let o = json!({"status": {"phase": "Ready", "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
            "spec": {"items": [1, 2, 3]}, "metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(eval(&path("{.status.phase}"), &o), vec![&json!("Ready")]);
        assert_eq!(
            eval(
                &path("{.status.conditions[?(@.type==\"Ready\")].status}"),
                &o
            ),
            vec![&json!("True")]
        );
        assert_eq!(eval(&path("{.spec.items[-1]}"), &o), vec![&json!(3)]);
        assert_eq!(eval(&path("{.spec.items[0:2]}"), &o).len(), 2);
        assert_eq!(
            eval(&path("{.metadata.labels['app.kubernetes.io/name']}"), &o),
            vec![&json!("x")]
        );
        assert_eq!(eval(&path("{..type}"), &o).len(), 2);
        assert!(parse("{.a[}").is_err());
    }
}
