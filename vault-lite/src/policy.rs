//! ACL policies: a parser for the HCL subset Vault policies are written in
//! (`path "<glob>" { capabilities = [...] }`, plus the JSON form), and
//! [`Acl`], the merged rules of a token's policies, which answers "may this
//! token do this operation on this path?" with Vault's matching rules:
//! a trailing `*` is a prefix glob, a `+` segment matches exactly one path
//! segment, and when several rules match, the most specific one wins
//! (exact over glob, later first wildcard, fewer `+`, longer). **No I/O.**

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::api::Operation;

/// A set of capabilities, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps(u16);

impl Caps {
    pub const CREATE: Caps = Caps(1);
    pub const READ: Caps = Caps(2);
    pub const UPDATE: Caps = Caps(4);
    pub const DELETE: Caps = Caps(8);
    pub const LIST: Caps = Caps(16);
    pub const SUDO: Caps = Caps(32);
    pub const DENY: Caps = Caps(64);
    pub const PATCH: Caps = Caps(128);
    pub const ALL: Caps = Caps(1 | 2 | 4 | 8 | 16 | 32 | 128);

    const NAMES: [(&'static str, Caps); 8] = [
        ("create", Caps::CREATE),
        ("read", Caps::READ),
        ("update", Caps::UPDATE),
        ("delete", Caps::DELETE),
        ("list", Caps::LIST),
        ("sudo", Caps::SUDO),
        ("deny", Caps::DENY),
        ("patch", Caps::PATCH),
    ];

    pub fn has(self, c: Caps) -> bool {
        self.0 & c.0 == c.0 && c.0 != 0
    }

    pub fn union(self, c: Caps) -> Caps {
        Caps(self.0 | c.0)
    }

    pub fn parse(name: &str) -> Option<Caps> {
        Caps::NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// Vault's names, as `sys/capabilities-self` lists them.
    pub fn names(self) -> Vec<String> {
        if self.has(Caps::DENY) || self.0 == 0 {
            return vec!["deny".into()];
        }
        Caps::NAMES.iter().filter(|(_, c)| self.has(*c)).map(|(n, _)| n.to_string()).collect()
    }

    pub fn for_op(op: Operation) -> Caps {
        match op {
            Operation::Read => Caps::READ,
            Operation::List => Caps::LIST,
            Operation::Create => Caps::CREATE,
            Operation::Update => Caps::UPDATE,
            Operation::Delete => Caps::DELETE,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub pattern: String,
    pub caps: Caps,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// The built-in `default` policy's rules: what every token may do to itself.
pub const DEFAULT_POLICY: &str = r#"# Every token may look itself up, renew and revoke itself.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}
path "auth/token/renew-self" {
    capabilities = ["update"]
}
path "auth/token/revoke-self" {
    capabilities = ["update"]
}
# Ask which capabilities it has on a path.
path "sys/capabilities-self" {
    capabilities = ["update"]
}
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}
# Renew and look up leases by id (knowing an id divulges nothing).
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}
path "sys/leases/lookup" {
    capabilities = ["update"]
}
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
"#;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Sym(char),
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut out = vec![];
    let mut chars = text.char_indices().peekable();
    let mut line = 1;
    while let Some(&(i, c)) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&(_, c)| c != '\n') {
                    chars.next();
                }
            }
            '/' if text[i..].starts_with("//") => {
                while chars.peek().is_some_and(|&(_, c)| c != '\n') {
                    chars.next();
                }
            }
            '/' if text[i..].starts_with("/*") => {
                let end = text[i + 2..].find("*/").ok_or(format!("line {line}: unterminated comment"))?;
                line += text[i..i + 2 + end].matches('\n').count();
                while chars.peek().is_some_and(|&(j, _)| j < i + end + 4) {
                    chars.next();
                }
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some((_, '\n')) => return Err(format!("line {line}: unterminated string")),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, c)) => s.push(c),
                            None => return Err(format!("line {line}: unterminated string")),
                        },
                        Some((_, c)) => s.push(c),
                    }
                }
                out.push((Tok::Str(s), line));
            }
            '{' | '}' | '[' | ']' | '=' | ',' => {
                out.push((Tok::Sym(c), line));
                chars.next();
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' => {
                let mut s = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((Tok::Ident(s), line));
            }
            other => return Err(format!("line {line}: unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks.get(self.at).or(self.toks.last()).map(|t| t.1).unwrap_or(1)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(s)) if s == c => Ok(()),
            other => Err(format!("line {}: expected '{c}', found {}", self.line(), show(&other))),
        }
    }

    fn string_list(&mut self) -> Result<Vec<String>, String> {
        self.expect('[')?;
        let mut out = vec![];
        loop {
            match self.next() {
                Some(Tok::Sym(']')) => return Ok(out),
                Some(Tok::Str(s)) => out.push(s),
                other => return Err(format!("line {}: expected a string or ']', found {}", self.line(), show(&other))),
            }
            match self.next() {
                Some(Tok::Sym(',')) => {}
                Some(Tok::Sym(']')) => return Ok(out),
                other => return Err(format!("line {}: expected ',' or ']', found {}", self.line(), show(&other))),
            }
        }
    }
}

fn show(t: &Option<Tok>) -> String {
    match t {
        None => "end of input".into(),
        Some(Tok::Str(s)) => format!("{s:?}"),
        Some(Tok::Ident(s)) => s.clone(),
        Some(Tok::Sym(c)) => format!("'{c}'"),
    }
}

fn caps_of(names: &[String], line: usize) -> Result<Caps, String> {
    names.iter().try_fold(Caps::default(), |acc, n| {
        Caps::parse(n).map(|c| acc.union(c)).ok_or_else(|| format!("line {line}: invalid capability {n:?}"))
    })
}

/// The pre-capabilities shorthand: `policy = "read"`.
fn legacy_caps(name: &str) -> Option<Caps> {
    Some(match name {
        "deny" => Caps::DENY,
        "read" => Caps::READ.union(Caps::LIST),
        "write" => Caps::CREATE.union(Caps::READ).union(Caps::UPDATE).union(Caps::DELETE).union(Caps::LIST),
        "sudo" => Caps::ALL,
        _ => return None,
    })
}

/// Parse a policy in HCL (or JSON, if it starts with `{`).
pub fn parse(text: &str) -> Result<Policy, String> {
    if text.trim_start().starts_with('{') {
        return parse_json(text);
    }
    let mut p = Parser { toks: lex(text)?, at: 0 };
    let mut rules = vec![];
    while p.at < p.toks.len() {
        match p.next() {
            Some(Tok::Ident(k)) if k == "path" => {}
            other => return Err(format!("line {}: expected `path`, found {}", p.line(), show(&other))),
        }
        let pattern = match p.next() {
            Some(Tok::Str(s)) => s,
            other => return Err(format!("line {}: expected a quoted path, found {}", p.line(), show(&other))),
        };
        check_pattern(&pattern).map_err(|e| format!("line {}: {e}", p.line()))?;
        p.expect('{')?;
        let mut caps = None;
        loop {
            match p.next() {
                Some(Tok::Sym('}')) => break,
                Some(Tok::Ident(k)) if k == "capabilities" => {
                    p.expect('=')?;
                    let line = p.line();
                    caps = Some(caps_of(&p.string_list()?, line)?);
                }
                Some(Tok::Ident(k)) if k == "policy" => {
                    p.expect('=')?;
                    match p.next() {
                        Some(Tok::Str(s)) => {
                            caps = Some(legacy_caps(&s).ok_or(format!("line {}: invalid policy {s:?}", p.line()))?)
                        }
                        other => return Err(format!("line {}: expected a string, found {}", p.line(), show(&other))),
                    }
                }
                Some(Tok::Ident(k)) => {
                    return Err(format!(
                        "line {}: `{k}` is not supported by vault-lite (only `capabilities` and `policy`)",
                        p.line()
                    ))
                }
                other => {
                    return Err(format!("line {}: expected an attribute or '}}', found {}", p.line(), show(&other)))
                }
            }
        }
        rules.push(Rule { pattern, caps: caps.unwrap_or_default() });
    }
    Ok(Policy { rules })
}

fn parse_json(text: &str) -> Result<Policy, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON policy: {e}"))?;
    let paths = v.get("path").and_then(|p| p.as_object()).ok_or("a JSON policy needs a \"path\" object")?;
    let mut rules = vec![];
    for (pattern, body) in paths {
        check_pattern(pattern)?;
        let caps = match (body.get("capabilities"), body.get("policy")) {
            (Some(c), _) => {
                let names: Vec<String> = serde_json::from_value(c.clone()).map_err(|e| format!("{pattern}: {e}"))?;
                caps_of(&names, 1)?
            }
            (None, Some(serde_json::Value::String(s))) => legacy_caps(s).ok_or(format!("invalid policy {s:?}"))?,
            _ => Caps::default(),
        };
        rules.push(Rule { pattern: pattern.clone(), caps });
    }
    Ok(Policy { rules })
}

fn check_pattern(p: &str) -> Result<(), String> {
    if let Some(i) = p.find('*') {
        if i != p.len() - 1 {
            return Err(format!("path {p:?}: `*` is only allowed at the end"));
        }
    }
    Ok(())
}

/// Does `pattern` match `path`?
pub fn matches(pattern: &str, path: &str) -> bool {
    let (pat, glob) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pat.contains('+') {
        return if glob { path.starts_with(pat) } else { path == pat };
    }
    let segs: Vec<&str> = pat.split('/').collect();
    let psegs: Vec<&str> = path.split('/').collect();
    if psegs.len() < segs.len() || (!glob && psegs.len() != segs.len()) {
        return false;
    }
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        if glob && i == last {
            let rest = psegs[i..].join("/");
            return if *seg == "+" { true } else { rest.starts_with(seg) };
        }
        if *seg != "+" && *seg != psegs[i] {
            return false;
        }
    }
    true
}

/// Vault's priority between two matching patterns: `Greater` wins.
fn priority(a: &str, b: &str) -> Ordering {
    let first_wild = |p: &str| p.find(['+', '*']).unwrap_or(usize::MAX);
    let plus = |p: &str| p.split('/').filter(|s| *s == "+").count();
    first_wild(a)
        .cmp(&first_wild(b))
        .then_with(|| (!a.ends_with('*')).cmp(&!b.ends_with('*')))
        .then_with(|| plus(b).cmp(&plus(a)))
        .then_with(|| a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

/// The merged rules of a token's policies.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    rules: BTreeMap<String, Caps>,
}

impl Acl {
    pub fn root() -> Acl {
        Acl { root: true, rules: BTreeMap::new() }
    }

    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let mut rules: BTreeMap<String, Caps> = BTreeMap::new();
        for p in policies {
            for r in &p.rules {
                let e = rules.entry(r.pattern.clone()).or_default();
                *e = e.union(r.caps);
            }
        }
        Acl { root: false, rules }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The capabilities of the winning rule for `path`.
    pub fn capabilities(&self, path: &str) -> Caps {
        if self.root {
            return Caps::ALL;
        }
        let best = self.rules.keys().filter(|p| matches(p, path)).max_by(|a, b| priority(a, b));
        match best {
            Some(p) => self.rules[p],
            // A list of "dir/" may be granted by a rule on "dir".
            None => match path.strip_suffix('/') {
                Some(trimmed) => self.rules.get(trimmed).copied().unwrap_or_default(),
                None => Caps::default(),
            },
        }
    }

    pub fn allows(&self, path: &str, op: Operation, sudo: bool) -> bool {
        if self.root {
            return true;
        }
        let caps = self.capabilities(path);
        if caps.has(Caps::DENY) {
            return false;
        }
        caps.has(Caps::for_op(op)) && (!sudo || caps.has(Caps::SUDO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hcl_with_comments() {
        let p = parse(
            r#"
            # read-only
            path "secret/data/voyager/*" { capabilities = ["read", "list"] }
            // second
            path "sys/mounts" {
              capabilities = ["read",]
            }
            /* legacy */ path "old/*" { policy = "write" }
            "#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].caps, Caps::READ.union(Caps::LIST));
        assert!(p.rules[2].caps.has(Caps::UPDATE));
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        assert!(parse(r#"path "a" { capabilities = ["reed"] }"#).unwrap_err().contains("invalid capability"));
        assert!(parse(r#"path "a" { allowed_parameters = {} }"#).unwrap_err().contains("not supported"));
        assert!(parse(r#"path "a*b" { capabilities = [] }"#).is_err());
        assert!(parse(r#"path "a" { capabilities = ["read"] "#).is_err());
    }

    #[test]
    fn parses_json() {
        let p = parse(r#"{"path": {"secret/*": {"capabilities": ["read"]}}}"#).unwrap();
        assert_eq!(p.rules[0].pattern, "secret/*");
    }

    #[test]
    fn globs_and_segments_match_like_vault() {
        assert!(matches("secret/data/voyager/*", "secret/data/voyager/app"));
        assert!(matches("secret/data/voyager/*", "secret/data/voyager/a/b"));
        assert!(!matches("secret/data/voyager/*", "secret/data/other"));
        assert!(matches("secret/+/voyager", "secret/data/voyager"));
        assert!(!matches("secret/+/voyager", "secret/data/x/voyager"));
        assert!(matches("secret/+/teams/*", "secret/data/teams/a"));
        assert!(matches("sys/mounts", "sys/mounts"));
        assert!(!matches("sys/mounts", "sys/mounts/x"));
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let p = parse(
            r#"
            path "secret/*" { capabilities = ["read", "update"] }
            path "secret/data/private" { capabilities = ["deny"] }
            path "secret/data/+/ro" { capabilities = ["read"] }
            "#,
        )
        .unwrap();
        let acl = Acl::new([&p]);
        assert!(acl.allows("secret/data/x", Operation::Update, false));
        assert!(!acl.allows("secret/data/private", Operation::Read, false));
        assert!(acl.allows("secret/data/a/ro", Operation::Read, false));
        assert!(!acl.allows("secret/data/a/ro", Operation::Update, false));
        assert!(!acl.allows("secret/data/x", Operation::Update, true), "sudo not granted");
        assert!(!acl.allows("other", Operation::Read, false));
    }

    #[test]
    fn identical_patterns_merge_across_policies() {
        let a = parse(r#"path "kv/*" { capabilities = ["read"] }"#).unwrap();
        let b = parse(r#"path "kv/*" { capabilities = ["list"] }"#).unwrap();
        let acl = Acl::new([&a, &b]);
        assert!(acl.allows("kv/x", Operation::Read, false) && acl.allows("kv/x", Operation::List, false));
    }
}
