//! Outbound HTTP grants: which requests a step may make, which addresses it may reach, and
//! the secrets the host writes into its headers. Pure rules, written once: the template
//! check and the sandbox's request path both use them.
//!
//! A rule is `{url, methods, paths}`. `url` is a scheme, a host (a name, `*.name` for any
//! subdomain, or an IP literal) and an optional port (`*` for any); `methods` and `paths`
//! narrow it (empty: all). A path pattern ending in `*` is a prefix, any other is exact.
//! Names are resolved by the host, and an address that is loopback, private, link-local,
//! multicast or a cloud metadata endpoint is only reached through a rule naming that IP.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// One `grants.http` entry as written in a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// `scheme://host[:port]`, e.g. `https://api.example.com`, `https://*.example.com`,
    /// `http://127.0.0.1:*`.
    pub url: String,
    /// Allowed methods; empty allows all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed paths (`/v1/charges` exact, `/v1/*` prefix); empty allows all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// A problem with one rule, naming the field it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// `url`, `methods[1]`, `paths[0]`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.example.com`, kept as `example.com`: any name below it, not the name itself.
    Below(String),
    Ip(IpAddr),
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: Scheme,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
    methods: Vec<String>,
    paths: Vec<String>,
}

/// A host as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One outgoing request, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub method: String,
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// Without the query.
    pub path: String,
}

impl Target {
    /// From the parts of a request: `authority` is `host[:port]`, `path_and_query` starts
    /// with `/` (empty means `/`).
    pub fn new(
        method: &str,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
    ) -> Result<Self, String> {
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("scheme {scheme:?} is not http or https"))?;
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed; send a header".into());
        }
        let (host, port) = split_authority(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p:?} is not a port number"))?,
        };
        let host = match parse_host(host)? {
            HostPattern::Name(n) => Host::Name(n),
            HostPattern::Ip(ip) => Host::Ip(ip),
            HostPattern::Below(_) => return Err(format!("host {host:?} is not a host name")),
        };
        let path = match path_and_query.split(['?', '#']).next() {
            Some("") | None => "/".to_string(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => return Err(format!("path {p:?} does not start with /")),
        };
        let method = method.to_ascii_uppercase();
        if !is_token(&method) {
            return Err(format!("method {method:?} is not an HTTP method"));
        }
        Ok(Self {
            method,
            scheme,
            host,
            port,
            path,
        })
    }

    /// `scheme://host[:port]/path`, the port only when it is not the scheme's default.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    fn origin(&self) -> String {
        if self.port == self.scheme.default_port() {
            format!("{}://{}", self.scheme.as_str(), self.host)
        } else {
            format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }

    /// The rule that would allow exactly this request, as a template would write it.
    pub fn suggested_rule(&self) -> String {
        format!(
            "{{url: {}, methods: [{}], paths: [\"{}\"]}}",
            self.origin(),
            self.method,
            self.path
        )
    }
}

/// Why a request was refused, with the rule that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub would_allow: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; a grant that would allow it: {}",
            self.reason, self.would_allow
        )
    }
}

/// The checked `grants.http` of one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    rules: Vec<Rule>,
}

impl HttpPolicy {
    /// Check every rule; errors name the rule's index and field.
    pub fn new(rules: &[HttpRule]) -> Result<Self, Vec<(usize, RuleError)>> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match compile(r) {
                Ok(rule) => ok.push(rule),
                Err(e) => errors.extend(e.into_iter().map(|e| (i, e))),
            }
        }
        if errors.is_empty() {
            Ok(Self { rules: ok })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The index of the first rule allowing `t`, or why none does.
    pub fn decide(&self, t: &Target) -> Result<usize, Refusal> {
        let refuse = |reason: String| Refusal {
            reason,
            would_allow: t.suggested_rule(),
        };
        let what = format!("{} {}", t.method, t.url());
        if self.rules.is_empty() {
            return Err(refuse(format!("{what}: the step has no http grant")));
        }
        let origin: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].matches_origin(t))
            .collect();
        if origin.is_empty() {
            return Err(refuse(format!(
                "{what}: no http grant names {}://{}:{}",
                t.scheme.as_str(),
                t.host,
                t.port
            )));
        }
        let method: Vec<usize> = origin
            .iter()
            .copied()
            .filter(|&i| self.rules[i].matches_method(&t.method))
            .collect();
        if method.is_empty() {
            return Err(refuse(format!(
                "{what}: the http grants for this host do not allow {}",
                t.method
            )));
        }
        let mut non_canonical = None;
        for &i in &method {
            match self.rules[i].matches_path(&t.path) {
                Ok(true) => return Ok(i),
                Ok(false) => {}
                Err(e) => non_canonical = Some(e),
            }
        }
        Err(refuse(match non_canonical {
            Some(e) => format!("{what}: {e}"),
            None => format!(
                "{what}: the http grants for this host do not allow the path {}",
                t.path
            ),
        }))
    }

    /// May rule `rule` (from [`HttpPolicy::decide`]) reach `ip`, an address the request's
    /// host resolved to? A restricted address only through a rule naming that IP.
    pub fn may_connect(&self, rule: usize, ip: IpAddr) -> Result<(), String> {
        let Some(why) = restricted(ip) else {
            return Ok(());
        };
        match self.rules.get(rule).map(|r| &r.host) {
            Some(HostPattern::Ip(named)) if canonical_ip(*named) == canonical_ip(ip) => Ok(()),
            _ => Err(format!(
                "{ip} is a {why} address; only a grant naming that IP (e.g. url: http://{}) \
                 may reach it",
                Host::Ip(ip)
            )),
        }
    }
}

impl Rule {
    fn matches_origin(&self, t: &Target) -> bool {
        if self.scheme != t.scheme || self.port.is_some_and(|p| p != t.port) {
            return false;
        }
        match (&self.host, &t.host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Below(suffix), Host::Name(h)) => h
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Ip(a), Host::Ip(b)) => canonical_ip(*a) == canonical_ip(*b),
            _ => false,
        }
    }

    fn matches_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// `Err` when the rule narrows paths and `path` could mean another path to a server.
    fn matches_path(&self, path: &str) -> Result<bool, String> {
        if self.paths.is_empty() {
            return Ok(true);
        }
        if let Some(why) = non_canonical(path) {
            return Err(format!(
                "the path {path} {why}, so path grants cannot be checked"
            ));
        }
        Ok(self.paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => p == path,
        }))
    }
}

/// What makes a path mean something else after a server normalises it.
fn non_canonical(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("has a . or .. segment");
    }
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return Some("has an encoded '.', '/', '\\' or NUL");
    }
    if path.contains('\\') || path.contains("//") {
        return Some("has '\\' or '//'");
    }
    None
}

fn compile(r: &HttpRule) -> Result<Rule, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(RuleError { field, message });
    let parsed = parse_rule_url(&r.url);
    if let Err(m) = &parsed {
        err("url".into(), m.clone());
    }
    let mut methods = Vec::new();
    for (i, m) in r.methods.iter().enumerate() {
        let up = m.trim().to_ascii_uppercase();
        if up == "*" {
            methods.clear();
            break;
        }
        if !is_token(&up) {
            err(
                format!("methods[{i}]"),
                format!("'{m}' is not an HTTP method such as GET or POST"),
            );
        }
        methods.push(up);
    }
    for (i, p) in r.paths.iter().enumerate() {
        let body = p.strip_suffix('*').unwrap_or(p);
        if !p.starts_with('/') {
            err(
                format!("paths[{i}]"),
                format!("'{p}' must start with / (e.g. /v1/charges or /v1/*)"),
            );
        } else if body.contains('*') {
            err(
                format!("paths[{i}]"),
                format!("'{p}': '*' is only allowed at the end (a prefix)"),
            );
        } else if body.contains(['?', '#']) {
            err(
                format!("paths[{i}]"),
                format!("'{p}': a path grant cannot hold a query or fragment"),
            );
        } else if let Some(why) = non_canonical(body) {
            err(format!("paths[{i}]"), format!("'{p}' {why}"));
        }
    }
    match parsed {
        Ok((scheme, host, port)) if errors.is_empty() => Ok(Rule {
            scheme,
            host,
            port,
            methods,
            paths: r.paths.clone(),
        }),
        _ => Err(errors),
    }
}

fn parse_rule_url(url: &str) -> Result<(Scheme, HostPattern, Option<u16>), String> {
    let shape = "expected scheme://host[:port], e.g. https://api.example.com";
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' has no scheme; {shape}"))?;
    let scheme = Scheme::parse(scheme)
        .ok_or_else(|| format!("'{url}': scheme '{scheme}' is not http or https"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "'{url}' has a path or query; put paths in `paths:` ({shape})"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "'{url}' holds credentials; use grants.secrets and a header"
        ));
    }
    let (host, port) = split_authority(authority).map_err(|m| format!("'{url}': {m}"))?;
    let port = match port {
        None => Some(scheme.default_port()),
        Some("*") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{url}': port '{p}' is not a port number or *"))?,
        ),
    };
    let host = parse_host(host).map_err(|m| format!("'{url}': {m}"))?;
    Ok((scheme, host, port))
}

/// `host[:port]`, with IPv6 in brackets.
fn split_authority(a: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = a.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address lacks its closing ]".to_string())?;
        return match after {
            "" => Ok((ip, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (ip, Some(p)))
                .ok_or_else(|| format!("unexpected '{p}' after the IPv6 address")),
        };
    }
    Ok(match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    })
}

fn parse_host(h: &str) -> Result<HostPattern, String> {
    if h.is_empty() {
        return Err("the host is empty".into());
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip));
    }
    let name = h.trim_end_matches('.').to_ascii_lowercase();
    let (below, name) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, name),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "'{h}' is not a host name, *.name or IP address (IPv6 in brackets)"
        ));
    }
    // A bare number like "2130706433" is an IP to some resolvers.
    if name
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("'{h}' is not a dotted IPv4 address"));
    }
    Ok(if below {
        HostPattern::Below(name)
    } else {
        HostPattern::Name(name)
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Why a guest may not reach `ip` through a name: `None` for a public unicast address.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [169, 254, 169, 254] => "cloud metadata",
        [0, ..] => "unspecified (0.0.0.0/8)",
        [127, ..] => "loopback",
        [10, ..] => "private (10.0.0.0/8)",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [100, b, ..] if (64..128).contains(&b) => "shared (100.64.0.0/10)",
        [169, 254, ..] => "link-local",
        [192, 0, 0, _] => "IETF protocol (192.0.0.0/24)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] => "cloud metadata",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // NAT64 embeds an IPv4 address: judge that one.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return restricted_v4(v4);
        }
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast",
        // IPv4-compatible (deprecated) ::a.b.c.d.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (::/96)",
        _ => return None,
    })
}

/// The placeholder a guest writes where the host puts secret `name`.
pub fn placeholder(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// A secret's source as written in `grants.secrets`: `env:NAME` gives the variable.
pub fn secret_source(source: &str) -> Result<&str, String> {
    match source.strip_prefix("env:") {
        Some(var) if is_secret_name(var) => Ok(var),
        Some(var) => Err(format!("'{var}' is not an environment variable name")),
        None => Err(format!(
            "'{source}' is not a secret source; write env:VARIABLE"
        )),
    }
}

/// Letters, digits and `_`, not starting with a digit.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replace every `{{secret:NAME}}` in a header value. `Ok(None)`: nothing to replace.
/// An unknown name is an error naming it (the request is refused, not sent half-filled).
pub fn substitute(
    value: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    if !value.contains("{{secret:") {
        return Ok(None);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("{{secret:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{secret:".len()..];
        let Some(end) = after.find("}}") else {
            return Err("a {{secret: placeholder is not closed with }}".into());
        };
        let name = &after[..end];
        match secrets.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("no secret named {name:?} is granted to the step")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Put placeholders back where secret values appear in `text` (longest values first, so a
/// secret containing another is hidden whole). Values shorter than 4 bytes are not
/// searched: they would blank unrelated text and hide little.
pub fn redact(text: &str, secrets: &BTreeMap<String, String>) -> Option<String> {
    let mut by_len: Vec<(&String, &String)> =
        secrets.iter().filter(|(_, v)| v.len() >= 4).collect();
    by_len.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out: Option<String> = None;
    for (name, value) in by_len {
        let current = out.as_deref().unwrap_or(text);
        if current.contains(value.as_str()) {
            out = Some(current.replace(value.as_str(), &placeholder(name)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(url: &str, methods: &[&str], paths: &[&str]) -> HttpRule {
        HttpRule {
            url: url.into(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn target(method: &str, url: &str) -> Target {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Target::new(method, scheme, auth, path).unwrap()
    }

    #[test]
    fn rules_match_scheme_host_port_method_and_path() {
        let p = HttpPolicy::new(&[
            rule("https://api.stripe.test", &["post"], &["/v1/charges*"]),
            rule("https://*.example.com", &[], &[]),
            rule("http://127.0.0.1:*", &["GET"], &["/health"]),
        ])
        .unwrap();
        assert_eq!(
            p.decide(&target(
                "POST",
                "https://api.stripe.test/v1/charges/ch_1?x=1"
            )),
            Ok(0)
        );
        assert_eq!(
            p.decide(&target("POST", "https://API.Stripe.test:443/v1/charges")),
            Ok(0)
        );
        assert_eq!(p.decide(&target("GET", "https://a.b.example.com/x")), Ok(1));
        assert_eq!(p.decide(&target("GET", "http://127.0.0.1:9/health")), Ok(2));
        let refused = [
            (
                "GET",
                "https://api.stripe.test/v1/charges",
                "do not allow GET",
            ),
            (
                "POST",
                "https://api.stripe.test/v1/refunds",
                "do not allow the path /v1/refunds",
            ),
            (
                "POST",
                "http://api.stripe.test/v1/charges",
                "no http grant names http://api.stripe.test:80",
            ),
            (
                "POST",
                "https://api.stripe.test:8443/v1/charges",
                "no http grant names",
            ),
            ("GET", "https://example.com/", "no http grant names"),
            ("GET", "https://evilexample.com/", "no http grant names"),
            ("GET", "http://127.0.0.2:9/health", "no http grant names"),
            (
                "POST",
                "https://api.stripe.test/v1/charges/../refunds",
                "has a . or .. segment",
            ),
            (
                "POST",
                "https://api.stripe.test/v1/charges/%2e%2e/refunds",
                "encoded",
            ),
        ];
        for (m, url, why) in refused {
            let r = p.decide(&target(m, url)).unwrap_err();
            assert!(r.reason.contains(why), "{m} {url}: {r}");
            assert!(
                r.to_string().contains("a grant that would allow it: {url:"),
                "{r}"
            );
        }
        // Without path grants, any path goes: the server alone decides what it means.
        let open = HttpPolicy::new(&[rule("https://x.test", &[], &[])]).unwrap();
        assert_eq!(
            open.decide(&target("GET", "https://x.test/a/../b%2F")),
            Ok(0)
        );
        assert!(
            HttpPolicy::default()
                .decide(&target("GET", "https://x.test/"))
                .is_err()
        );
    }

    #[test]
    fn bad_rules_name_their_field() {
        let errors = HttpPolicy::new(&[
            rule("api.example.com", &[], &[]),
            rule("ftp://x.test", &[], &[]),
            rule("https://x.test/v1", &[], &[]),
            rule("https://user:pw@x.test", &[], &[]),
            rule("https://x.test:99999", &[], &[]),
            rule("https://x.test", &["GE T"], &["v1", "/a*b", "/../x"]),
            rule("https://2130706433", &[], &[]),
        ])
        .unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|(i, e)| (*i, e.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (0, "url"),
                (1, "url"),
                (2, "url"),
                (3, "url"),
                (4, "url"),
                (5, "methods[0]"),
                (5, "paths[0]"),
                (5, "paths[1]"),
                (5, "paths[2]"),
                (6, "url"),
            ]
        );
        assert!(errors[2].1.message.contains("paths:"), "{:?}", errors[2]);
    }

    #[test]
    fn targets_refuse_credentials_and_bad_ports() {
        assert!(
            Target::new("GET", "https", "u:p@x.test", "/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(Target::new("GET", "https", "x.test:0", "/").is_err());
        assert!(Target::new("GET", "gopher", "x.test", "/").is_err());
        let t = Target::new("get", "HTTP", "[::1]:8080", "").unwrap();
        assert_eq!(
            (t.method.as_str(), t.url()),
            ("GET", "http://[::1]:8080/".to_string())
        );
    }

    #[test]
    fn restricted_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert_eq!(restricted(ip.parse().unwrap()), None, "{ip}");
        }
        assert_eq!(
            restricted("169.254.169.254".parse().unwrap()),
            Some("cloud metadata")
        );
    }

    #[test]
    fn only_a_rule_naming_the_ip_reaches_a_restricted_address() {
        let p = HttpPolicy::new(&[
            rule("http://localhost:*", &[], &[]),
            rule("http://127.0.0.1:*", &[], &[]),
            rule("https://*.example.com", &[], &[]),
        ])
        .unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.may_connect(0, lo).unwrap_err().contains("loopback"));
        assert_eq!(p.may_connect(1, lo), Ok(()));
        assert_eq!(
            p.may_connect(1, "::ffff:127.0.0.1".parse().unwrap()),
            Ok(())
        );
        assert!(p.may_connect(1, "127.0.0.2".parse().unwrap()).is_err());
        assert!(
            p.may_connect(2, "169.254.169.254".parse().unwrap())
                .unwrap_err()
                .contains("metadata")
        );
        assert_eq!(p.may_connect(2, "93.184.216.34".parse().unwrap()), Ok(()));
    }

    #[test]
    fn secrets_substitute_and_redact() {
        let s: BTreeMap<String, String> = [
            ("KEY".to_string(), "sk_live_123".to_string()),
            ("LONG".into(), "sk_live_123456".into()),
        ]
        .into();
        assert_eq!(
            substitute("Bearer {{secret:KEY}}", &s),
            Ok(Some("Bearer sk_live_123".into()))
        );
        assert_eq!(substitute("plain", &s), Ok(None));
        assert!(
            substitute("{{secret:NOPE}}", &s)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(substitute("{{secret:KEY", &s).is_err());
        assert_eq!(
            redact("a sk_live_123456 b sk_live_123", &s).as_deref(),
            Some("a {{secret:LONG}} b {{secret:KEY}}")
        );
        assert_eq!(redact("nothing", &s), None);
        assert_eq!(secret_source("env:STRIPE_KEY"), Ok("STRIPE_KEY"));
        assert!(secret_source("vault:x").is_err());
        assert!(secret_source("env:1X").is_err());
    }
}
