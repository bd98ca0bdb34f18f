//! Name and label syntax checks, with the real server's messages
//! (`k8s.io/apimachinery/pkg/util/validation`). Each returns the list of problems; empty
//! means valid.

use regex::Regex;
use std::sync::OnceLock;

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("static regex"))
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

fn max_len(s: &str, n: usize) -> Option<String> {
    (s.len() > n).then(|| format!("must be no more than {n} characters"))
}

/// RFC 1123 label (namespaces, ...): at most 63 characters.
pub fn dns1123_label(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e: Vec<String> = max_len(s, 63).into_iter().collect();
    if !re(&R, &format!("^{DNS1123_LABEL_FMT}$")).is_match(s) {
        e.push(format!("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL_FMT}')"));
    }
    e
}

/// RFC 1123 subdomain (most object names): at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e: Vec<String> = max_len(s, 253).into_iter().collect();
    if !re(&R, &format!("^{DNS1123_SUBDOMAIN_FMT}$")).is_match(s) {
        e.push(format!("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"));
    }
    e
}

/// RFC 1035 label (service names): at most 63 characters, starts with a letter.
pub fn dns1035_label(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e: Vec<String> = max_len(s, 63).into_iter().collect();
    if !re(&R, &format!("^{DNS1035_LABEL_FMT}$")).is_match(s) {
        e.push(format!("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"));
    }
    e
}

/// A path segment name (RBAC objects): not `.`/`..`, no `/` or `%`.
pub fn path_segment(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s == "." || s == ".." {
        e.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            e.push(format!("may not contain '{bad}'"));
        }
    }
    e
}

/// A qualified name (`prefix/name`; label and annotation keys, finalizers).
pub fn qualified_name(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.len() {
        1 => parts[0],
        2 => {
            if parts[0].is_empty() {
                e.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain(parts[0]) {
                    e.push(format!("prefix part {m}"));
                }
            }
            parts[1]
        }
        _ => {
            return vec![format!("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")];
        }
    };
    if name.is_empty() {
        e.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        e.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !re(&R, &format!("^{QUALIFIED_NAME_FMT}$")).is_match(name) {
        e.push(format!("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')"));
    }
    e
}

/// A label value: at most 63 characters, possibly empty.
pub fn label_value(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e: Vec<String> = max_len(s, 63).into_iter().collect();
    if !re(&R, &format!("^{LABEL_VALUE_FMT}$")).is_match(s) {
        e.push(format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE_FMT}')"));
    }
    e
}

/// A ConfigMap or Secret data key.
pub fn config_map_key(s: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let mut e: Vec<String> = max_len(s, 253).into_iter().collect();
    if !re(&R, &format!("^{CONFIG_KEY_FMT}$")).is_match(s) {
        e.push(format!("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '{CONFIG_KEY_FMT}')"));
    }
    if s == "." {
        e.push("must not be '.'".to_string());
    } else if s == ".." {
        e.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        e.push("must not start with '..'".to_string());
    }
    e
}

/// An environment variable name (1.33 relaxed rule: printable ASCII except `=`).
pub fn env_var_name(s: &str) -> Vec<String> {
    if s.is_empty() || !s.bytes().all(|b| (32..=126).contains(&b) && b != b'=') {
        vec!["a valid environment variable name must consist only of printable ASCII characters other than '='".to_string()]
    } else {
        Vec::new()
    }
}

/// An IANA service name (container and service port names).
pub fn port_name(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 15 {
        e.push("must be no more than 15 characters".to_string());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        e.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if s.contains("--") {
        e.push("must not contain consecutive hyphens".to_string());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        e.push("must contain at least one letter (a-z)".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        e.push("must not begin or end with a hyphen".to_string());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("a.b-c").is_empty());
        assert!(!dns1123_subdomain("A").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert_eq!(
            dns1123_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(!dns1035_label("1abc").is_empty());
        assert!(qualified_name("example.com/My_Name").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("-x").is_empty());
        assert!(label_value("").is_empty());
        assert!(!label_value("a b").is_empty());
        assert!(config_map_key("datasafed.conf").is_empty());
        assert!(!config_map_key("a/b").is_empty());
        assert!(port_name("http").is_empty());
        assert!(!port_name("HTTP").is_empty());
        assert!(!port_name("80").is_empty());
        assert!(env_var_name("1X").is_empty());
        assert!(!env_var_name("A=B").is_empty());
    }
}
