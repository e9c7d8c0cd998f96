//! Reading a Flashphoner WCS configuration folder (`--wcs-config DIR`): `flashphoner.properties`
//! and, when it enables load balancing, `loadbalancing.xml`. The node read this way is a CDN
//! origin (the folder with the balancer is the origin's).
//!
//! Keys rtcdn maps:
//!
//! | WCS | rtcdn |
//! | --- | --- |
//! | `load_balancing_enabled` | `cdn.load_balancing_enabled` |
//! | `ws.port` | port of `http.listen` |
//! | `wss.port` | port of `http.tls_listen` |
//! | `media_port_from` | `media.port_base` (`media_port_to` is checked against the media threads) |
//! | `ip`, `ip_local` | `ip_local` (else `ip`) → `media.bind` and the address of `http.listen` and `http.tls_listen`; `ip` with `ip_local` → `media.announce` |
//!
//! Other keys are logged as unused with their file and line. Malformed values, XML, modes,
//! elements, nodes and ports are [`ConfigError::Wcs`] errors naming the file, line and key.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tracing::warn;

use crate::auth::config::Secret;
use crate::config::cdn::{parse_stream_distribution, BalanceMode, CdnConfig, CdnNode, CdnRole};
use crate::config::error::ConfigError;
use crate::config::Config;

/// The properties file in a WCS folder.
pub const PROPERTIES_FILE: &str = "flashphoner.properties";
/// The balancer file in a WCS folder.
pub const LOADBALANCING_FILE: &str = "loadbalancing.xml";

/// One `key=value` of a Java properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The key, unescaped.
    pub key: String,
    /// The value, unescaped, trailing whitespace trimmed.
    pub value: String,
    /// The 1-based line the entry starts on.
    pub line: usize,
}

/// Reads a WCS folder into a node configuration (defaults for everything the files do not set).
pub fn load_wcs_dir(dir: &Path) -> Result<Config, ConfigError> {
    let properties_path = dir.join(PROPERTIES_FILE);
    let text = read(&properties_path)?;
    let mut config = Config::default();
    config.cdn.role = CdnRole::Origin;
    apply_properties(&mut config, &text, &properties_path)?;
    if config.cdn.load_balancing_enabled {
        let xml_path = dir.join(LOADBALANCING_FILE);
        let xml = read(&xml_path)?;
        let cdn = parse_loadbalancing(&xml, &xml_path)?;
        config.cdn = CdnConfig {
            load_balancing_enabled: true,
            secret: config.cdn.secret.take(),
            ..cdn
        };
    }
    config.validate()?;
    Ok(config)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn error(
    path: &Path,
    line: usize,
    key: impl Into<String>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Wcs {
        path: path.to_owned(),
        line,
        key: key.into(),
        message: message.into(),
    }
}

/// Applies the keys of `flashphoner.properties` that rtcdn knows to `config`.
fn apply_properties(config: &mut Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let properties = parse_properties(text);
    let mut ip: Option<(IpAddr, usize)> = None;
    let mut ip_local: Option<(IpAddr, usize)> = None;
    let mut media_port_to: Option<(u16, usize)> = None;
    let mut rtmp_port: Option<u16> = None;
    for (i, property) in properties.iter().enumerate() {
        let Property { key, value, line } = property;
        let line = *line;
        if let Some(earlier) = properties[..i].iter().find(|p| p.key == *key) {
            warn!(file = %path.display(), line, key = %key, "WCS key set again (first on line {}); the last value counts", earlier.line);
        }
        match key.as_str() {
            "load_balancing_enabled" => {
                config.cdn.load_balancing_enabled = parse_bool(path, property)?
            }
            "ws.port" => config.http.listen.set_port(parse_port(path, property)?),
            "wss.port" => config.http.tls_listen.set_port(parse_port(path, property)?),
            "media_port_from" => config.media.port_base = parse_port(path, property)?,
            "media_port_to" => media_port_to = Some((parse_port(path, property)?, line)),
            // WCS's RTMP port: where encoders publish, and an origin's RTMP relays arrive.
            "rtmp.port" => rtmp_port = Some(parse_port(path, property)?),
            "ip" => ip = parse_ip(path, property)?.map(|a| (a, line)),
            "ip_local" => ip_local = parse_ip(path, property)?.map(|a| (a, line)),
            // rtcdn's own key: WCS has no relay authentication, rtcdn edges require it.
            "rtcdn.cdn_secret" => config.cdn.secret = Some(Secret::new(value.trim())),
            _ => {
                warn!(file = %path.display(), line, key = %key, value = %value, "WCS key not used by rtcdn; ignored")
            }
        }
    }
    let bind = ip_local.or(ip).map(|(a, _)| a);
    if let Some(port) = rtmp_port {
        let host = bind.unwrap_or(crate::config::rtmp::DEFAULT_RTMP_LISTEN.ip());
        config.rtmp.listen = Some(SocketAddr::new(host, port));
    }
    if let Some(bind) = bind {
        config.media.bind = bind;
        config.http.listen = SocketAddr::new(bind, config.http.listen.port());
        config.http.tls_listen = SocketAddr::new(bind, config.http.tls_listen.port());
    }
    if let (Some((local, _)), Some((public, _))) = (ip_local, ip) {
        if local != public {
            config.media.announce = vec![public];
        }
    }
    if let Some((to, line)) = media_port_to {
        let last = usize::from(config.media.port_base) + config.media_threads() - 1;
        if to < config.media.port_base {
            return Err(error(
                path,
                line,
                "media_port_to",
                format!("{to} is below media_port_from {}", config.media.port_base),
            ));
        }
        if last > usize::from(to) {
            warn!(file = %path.display(), line, "media_port_to {to}: rtcdn uses one UDP port per media thread, {}..={last}", config.media.port_base);
        }
    }
    Ok(())
}

fn parse_bool(path: &Path, property: &Property) -> Result<bool, ConfigError> {
    match property.value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(error(
            path,
            property.line,
            &property.key,
            format!("{:?} is not true or false", property.value),
        )),
    }
}

fn parse_port(path: &Path, property: &Property) -> Result<u16, ConfigError> {
    match property.value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(error(
            path,
            property.line,
            &property.key,
            format!("{:?} is not a port number (1-65535)", property.value),
        )),
    }
}

/// An address, or `None` for an empty value. A host name is refused: rtcdn binds to it.
fn parse_ip(path: &Path, property: &Property) -> Result<Option<IpAddr>, ConfigError> {
    if property.value.is_empty() {
        return Ok(None);
    }
    property.value.parse().map(Some).map_err(|_| {
        error(
            path,
            property.line,
            &property.key,
            format!("{:?} is not an IP address", property.value),
        )
    })
}

/// Parses a Java properties file (`java.util.Properties.load`): `key=value`, `key: value` or
/// `key value`; `#` and `!` comment lines; blank lines; a line ending in an odd number of
/// backslashes continues on the next (whose leading whitespace is dropped); `\t`, `\n`, `\r`,
/// `\f`, `\uXXXX` and `\x` escapes. Unlike Java, trailing whitespace of a value is trimmed.
pub fn parse_properties(text: &str) -> Vec<Property> {
    let lines: Vec<&str> = split_lines(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start_matches([' ', '\t', '\x0c']);
        i += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::from(first);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.get(i) {
                Some(next) => {
                    logical.push_str(next.trim_start_matches([' ', '\t', '\x0c']));
                    i += 1;
                }
                None => break,
            }
        }
        let (key, value) = split_entry(&logical);
        out.push(Property {
            key,
            value: value.trim_end().to_owned(),
            line: start + 1,
        });
    }
    out
}

/// Lines split at `\n`, `\r\n` or `\r`.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            Some(at) => {
                lines.push(&rest[..at]);
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
            None => {
                lines.push(rest);
                rest = "";
            }
        }
    }
    lines
}

fn ends_with_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits a logical line into the unescaped key and value.
fn split_entry(line: &str) -> (String, String) {
    let mut chars = line.chars().peekable();
    let mut key = String::new();
    while let Some(&c) = chars.peek() {
        match c {
            '\\' => {
                chars.next();
                unescape_into(&mut chars, &mut key);
            }
            '=' | ':' | ' ' | '\t' | '\x0c' => break,
            _ => {
                key.push(c);
                chars.next();
            }
        }
    }
    // Whitespace, then at most one separator, then whitespace.
    while chars
        .next_if(|c| matches!(c, ' ' | '\t' | '\x0c'))
        .is_some()
    {}
    if chars.next_if(|c| matches!(c, '=' | ':')).is_some() {
        while chars
            .next_if(|c| matches!(c, ' ' | '\t' | '\x0c'))
            .is_some()
        {}
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            unescape_into(&mut chars, &mut value);
        } else {
            value.push(c);
        }
    }
    (key, value)
}

/// Reads the escape after a backslash.
fn unescape_into(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    match chars.next() {
        Some('t') => out.push('\t'),
        Some('n') => out.push('\n'),
        Some('r') => out.push('\r'),
        Some('f') => out.push('\x0c'),
        Some('u') => {
            let hex: String = (0..4)
                .filter_map(|_| chars.next_if(char::is_ascii_hexdigit))
                .collect();
            match u32::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == 4)
                .and_then(char::from_u32)
            {
                Some(c) => out.push(c),
                // Java throws on a malformed \u; keep the text rather than lose the entry.
                None => {
                    out.push('u');
                    out.push_str(&hex);
                }
            }
        }
        Some(other) => out.push(other),
        None => {}
    }
}

/// Parses `loadbalancing.xml` into a `[cdn]` for an origin (`load_balancing_enabled` false: the
/// caller sets it from the properties).
pub fn parse_loadbalancing(xml: &str, path: &Path) -> Result<CdnConfig, ConfigError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        error(
            path,
            e.pos().row as usize,
            "xml",
            format!("malformed XML: {e}"),
        )
    })?;
    let line_of = |pos: usize| doc.text_pos_at(pos).row as usize;
    let root = doc.root_element();
    if root.tag_name().name() != "loadbalancer" {
        return Err(error(
            path,
            line_of(root.range().start),
            root.tag_name().name(),
            "the root element must be <loadbalancer>",
        ));
    }
    let mut cdn = CdnConfig {
        role: CdnRole::Origin,
        ..CdnConfig::default()
    };
    for attribute in root.attributes() {
        let line = line_of(attribute.range().start);
        let value = attribute.value();
        match attribute.name() {
            "mode" => {
                cdn.mode = BalanceMode::from_wcs(value).ok_or_else(|| {
                    error(
                        path,
                        line,
                        "loadbalancer mode",
                        format!(
                            "{value:?} is not ROUNDROBIN, FEWESTCALLS, RANDOM or LESS_LOADED_NODE"
                        ),
                    )
                })?;
            }
            "stream_distribution" => {
                cdn.stream_distribution = parse_stream_distribution(value).map_err(|message| {
                    error(path, line, "loadbalancer stream_distribution", message)
                })?;
            }
            "randomize" => {
                cdn.randomize = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(error(
                            path,
                            line,
                            "loadbalancer randomize",
                            format!("{value:?} is not true or false"),
                        ))
                    }
                };
            }
            other => {
                warn!(file = %path.display(), line, attribute = other, "<loadbalancer> attribute not used by rtcdn; ignored")
            }
        }
    }
    for child in root.children() {
        let line = line_of(child.range().start);
        if child.is_text() {
            if child.text().is_some_and(|t| !t.trim().is_empty()) {
                return Err(error(path, line, "loadbalancer", "text outside a <node>"));
            }
            continue;
        }
        if !child.is_element() {
            continue;
        }
        match child.tag_name().name() {
            "node" => {
                let node = parse_node(&child, path, &line_of)?;
                if let Some(other) = cdn.nodes.iter().find(|n| n.id == node.id) {
                    return Err(error(
                        path,
                        line,
                        "node id",
                        format!(
                            "id {} is already used by the node at {}",
                            node.id, other.host
                        ),
                    ));
                }
                cdn.nodes.push(node);
            }
            other => {
                return Err(error(
                    path,
                    line,
                    other,
                    format!("unknown element <{other}> in <loadbalancer> (expected <node>)"),
                ))
            }
        }
    }
    Ok(cdn)
}

fn parse_node(
    node: &roxmltree::Node<'_, '_>,
    path: &Path,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<CdnNode, ConfigError> {
    let node_line = line_of(node.range().start);
    let id = match node.attribute_node("id") {
        None => {
            return Err(error(
                path,
                node_line,
                "node id",
                "<node> needs an id attribute",
            ))
        }
        Some(attr) => attr.value().trim().parse::<u32>().map_err(|_| {
            error(
                path,
                line_of(attr.range().start),
                "node id",
                format!("{:?} is not a number", attr.value()),
            )
        })?,
    };
    for attribute in node.attributes().filter(|a| a.name() != "id") {
        warn!(file = %path.display(), line = line_of(attribute.range().start), attribute = attribute.name(), "<node> attribute not used by rtcdn; ignored");
    }
    let mut host: Option<String> = None;
    let mut ws: Option<u16> = None;
    let mut wss: Option<u16> = None;
    let mut rtmp: Option<u16> = None;
    for child in node.children() {
        let line = line_of(child.range().start);
        if child.is_text() {
            if child.text().is_some_and(|t| !t.trim().is_empty()) {
                return Err(error(
                    path,
                    line,
                    "node",
                    format!("text in <node id=\"{id}\"> outside its elements"),
                ));
            }
            continue;
        }
        if !child.is_element() {
            continue;
        }
        let name = child.tag_name().name();
        if child.children().any(|c| c.is_element()) {
            return Err(error(
                path,
                line,
                name,
                format!("<{name}> holds elements; expected text"),
            ));
        }
        let text: String = child
            .children()
            .filter_map(|c| c.text())
            .collect::<String>()
            .trim()
            .to_owned();
        let port = || -> Result<u16, ConfigError> {
            match text.parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(error(
                    path,
                    line,
                    name,
                    format!("{text:?} is not a port number (1-65535)"),
                )),
            }
        };
        let duplicate = || {
            error(
                path,
                line,
                name,
                format!("<{name}> appears twice in <node id=\"{id}\">"),
            )
        };
        match name {
            "ip" => {
                if host.is_some() {
                    return Err(duplicate());
                }
                if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '/') {
                    return Err(error(
                        path,
                        line,
                        "ip",
                        format!("{text:?} is not a host name or address"),
                    ));
                }
                host = Some(text.clone());
            }
            "ws" => {
                if ws.is_some() {
                    return Err(duplicate());
                }
                ws = Some(port()?);
            }
            "wss" => {
                if wss.is_some() {
                    return Err(duplicate());
                }
                wss = Some(port()?);
            }
            // Where `stream_distribution="rtmp"` pushes to the node.
            "rtmp" => {
                if rtmp.is_some() {
                    return Err(duplicate());
                }
                rtmp = Some(port()?);
            }
            // The Flash port the WCS balancer also hands out.
            "flash" => {
                port()?;
                warn!(file = %path.display(), line, element = name, "<node> element not used by rtcdn (no Flash); ignored");
            }
            other => {
                return Err(error(
                    path,
                    line,
                    other,
                    format!(
                        "unknown element <{other}> in <node id=\"{id}\"> (expected ip, ws, wss)"
                    ),
                ))
            }
        }
    }
    let Some(host) = host else {
        return Err(error(
            path,
            node_line,
            "ip",
            format!("<node id=\"{id}\"> has no <ip>"),
        ));
    };
    if ws.is_none() && wss.is_none() {
        return Err(error(
            path,
            node_line,
            "ws",
            format!("<node id=\"{id}\"> has neither <ws> nor <wss>"),
        ));
    }
    Ok(CdnNode {
        id,
        host,
        ws,
        wss,
        rtmp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cdn::StreamDistribution;

    fn props(text: &str) -> Vec<(String, String, usize)> {
        parse_properties(text)
            .into_iter()
            .map(|p| (p.key, p.value, p.line))
            .collect()
    }

    fn kv(key: &str, value: &str, line: usize) -> (String, String, usize) {
        (key.to_owned(), value.to_owned(), line)
    }

    #[test]
    fn the_shipped_example_is_an_origin_relaying_to_the_edge() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wcs-example");
        let config = load_wcs_dir(&dir).unwrap();
        assert_eq!(config.cdn.role, CdnRole::Origin);
        assert!(config.cdn.load_balancing_enabled);
        assert!(config.cdn.relays());
        assert_eq!(config.cdn.mode, BalanceMode::RoundRobin);
        assert_eq!(config.cdn.stream_distribution, StreamDistribution::WebRtc);
        assert_eq!(
            config.cdn.nodes,
            vec![CdnNode {
                id: 1,
                host: "127.0.0.1".into(),
                ws: Some(8180),
                wss: None,
                rtmp: None,
            }]
        );
        assert_eq!(
            config.http.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.http.tls_listen,
            "127.0.0.1:8443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.media.port_base, 31000);
        // The edge it names is the shipped edge config.
        let (origin, edge) = crate::config::demo_configs().unwrap();
        assert_eq!(config.cdn.nodes[0].ws, Some(edge.http.listen.port()));
        assert_eq!(config.cdn.nodes, origin.cdn.nodes);
        // `--print-config` shows what the import understood, as TOML that reads back.
        let printed = config.to_toml();
        assert!(printed.contains("secret = \"<redacted>\""), "{printed}");
        assert!(
            !printed.contains(crate::config::cdn::EXAMPLE_SECRET),
            "{printed}"
        );
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back.cdn.nodes, config.cdn.nodes);
        assert_eq!((back.http, back.media), (config.http, config.media));
    }

    #[test]
    fn the_documented_wcs_example_is_accepted_as_written() {
        let xml = r#"<loadbalancer mode="roundrobin" stream_distribution="webrtc">
  <node id="1"><ip>edge1.mydomain.com</ip><wss>443</wss></node>
  <node id="2"><ip>edge2.mydomain.com</ip><wss>443</wss></node>
</loadbalancer>"#;
        let cdn = parse_loadbalancing(xml, Path::new("loadbalancing.xml")).unwrap();
        assert_eq!(cdn.mode, BalanceMode::RoundRobin);
        assert_eq!(cdn.nodes.len(), 2);
        assert_eq!(
            cdn.nodes[1],
            CdnNode {
                id: 2,
                host: "edge2.mydomain.com".into(),
                ws: None,
                wss: Some(443),
                rtmp: None,
            }
        );
        // No mode: FEWESTCALLS; modes are case-insensitive; randomize.
        let cdn = parse_loadbalancing(r#"<loadbalancer randomize="true"><node id="3"><ip>a</ip><ws>1</ws><flash>1935</flash></node></loadbalancer>"#, Path::new("x")).unwrap();
        assert_eq!(cdn.mode, BalanceMode::FewestCalls);
        assert!(cdn.randomize);
        for (mode, want) in [
            ("FEWESTCALLS", BalanceMode::FewestCalls),
            ("Random", BalanceMode::Random),
            ("less_loaded_node", BalanceMode::LessLoaded),
            ("ROUNDROBIN", BalanceMode::RoundRobin),
        ] {
            let xml = format!(r#"<loadbalancer mode="{mode}"/>"#);
            assert_eq!(
                parse_loadbalancing(&xml, Path::new("x")).unwrap().mode,
                want
            );
        }
    }

    fn xml_err(xml: &str) -> String {
        parse_loadbalancing(xml, Path::new("dir/loadbalancing.xml"))
            .unwrap_err()
            .to_string()
    }

    fn assert_names(err: &str, line: usize, key: &str) {
        assert!(
            err.contains(&format!("dir/loadbalancing.xml:{line}:")),
            "line {line}: {err}"
        );
        assert!(err.contains(key), "key {key}: {err}");
    }

    #[test]
    fn xml_errors_name_file_line_and_key() {
        let err = xml_err("<loadbalancer\n  mode=\"LEAST\">\n</loadbalancer>");
        assert_names(&err, 2, "mode");
        assert!(err.contains("LEAST"), "{err}");
        let err = xml_err("<loadbalancer\n stream_distribution=\"flash\"/>");
        assert_names(&err, 2, "stream_distribution");
        assert!(err.contains("\"webrtc\" or \"rtmp\""), "{err}");
        let err =
            xml_err("<loadbalancer>\n<node id=\"1\">\n<wss>443</wss>\n</node>\n</loadbalancer>");
        assert_names(&err, 2, "ip");
        let err = xml_err("<loadbalancer>\n<node id=\"1\">\n<ip>a</ip>\n</loadbalancer>");
        assert_names(&err, 4, "xml");
        assert!(err.contains("malformed XML"), "{err}");
        let err = xml_err(
            "<loadbalancer>\n<node id=\"1\"><ip>a</ip>\n<wss>99999</wss></node>\n</loadbalancer>",
        );
        assert_names(&err, 3, "wss");
        let err = xml_err("<loadbalancer>\n<node id=\"1\"><ip>a</ip><ws>8080</ws>\n<port>1</port></node>\n</loadbalancer>");
        assert_names(&err, 3, "port");
        let err = xml_err("<loadbalancer>\n\n<edge/>\n</loadbalancer>");
        assert_names(&err, 3, "edge");
        let err =
            xml_err("<loadbalancer>\n<node id=\"x\"><ip>a</ip><ws>1</ws></node>\n</loadbalancer>");
        assert_names(&err, 2, "node id");
        let err = xml_err("<loadbalancer>\n<node><ip>a</ip><ws>1</ws></node>\n</loadbalancer>");
        assert_names(&err, 2, "node id");
        let err = xml_err("<loadbalancer>\n<node id=\"1\"><ip>a</ip></node>\n</loadbalancer>");
        assert_names(&err, 2, "ws");
        let err = xml_err("<loadbalancer>\n<node id=\"1\"><ip>a</ip><ws>1</ws></node>\n<node id=\"1\"><ip>b</ip><ws>1</ws></node></loadbalancer>");
        assert_names(&err, 3, "node id");
        let err = xml_err("<balancer/>");
        assert_names(&err, 1, "balancer");
        let err = xml_err("");
        assert!(
            err.contains("dir/loadbalancing.xml:1:") && err.contains("xml"),
            "{err}"
        );
    }

    #[test]
    fn properties_edge_cases() {
        let text = "# comment\n! also a comment\n\n   \nkey1=value1\n  key2 = value 2  \nkey3:value3\nkey4 value4\n\
                    key5\nkey6=\nmulti=a,\\\n    b,\\\n\tc\nesc\\=aped\\:key=x\\ty\\u0041\\\\\ncrlf=1\r\ncr=2\rlast=end\\";
        assert_eq!(
            props(text),
            vec![
                kv("key1", "value1", 5),
                kv("key2", "value 2", 6),
                kv("key3", "value3", 7),
                kv("key4", "value4", 8),
                kv("key5", "", 9),
                kv("key6", "", 10),
                kv("multi", "a,b,c", 11),
                kv("esc=aped:key", "x\tyA\\", 14),
                kv("crlf", "1", 15),
                kv("cr", "2", 16),
                kv("last", "end", 17),
            ]
        );
        // A comment line does not continue; "=" after whitespace separator is part of the value
        // only once.
        assert_eq!(
            props("#a\\\nb=1\nk = =v"),
            vec![kv("b", "1", 2), kv("k", "=v", 3)]
        );
        assert!(props("").is_empty());
    }

    fn load_props(text: &str, xml: Option<&str>) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "rtcdn-wcs-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(PROPERTIES_FILE), text).unwrap();
        if let Some(xml) = xml {
            std::fs::write(dir.join(LOADBALANCING_FILE), xml).unwrap();
        }
        let result = load_wcs_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn properties_map_to_config() {
        let config = load_props("ip=192.0.2.7\nip_local=10.0.0.5\nws.port=9080\nwss.port = 9443\nmedia_port_from=40000\nmedia_port_to=50000\nrtmp.port=1935\n", None).unwrap();
        assert!(!config.cdn.load_balancing_enabled && !config.cdn.relays());
        assert_eq!(
            config.http.listen,
            "10.0.0.5:9080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.http.tls_listen,
            "10.0.0.5:9443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.media.bind, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(
            config.media.announce,
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(config.media.port_base, 40000);
        assert_eq!(config.rtmp.listen, Some("10.0.0.5:1935".parse().unwrap()));
        let config = load_props("ip=127.0.0.2\n", None).unwrap();
        assert_eq!(config.rtmp.listen, None);
        assert_eq!(config.media.bind, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(config.media.announce.is_empty());
        let rtmp_only = load_props("rtmp.port=1936\n", None).unwrap();
        assert_eq!(
            rtmp_only.rtmp.listen,
            Some("127.0.0.1:1936".parse().unwrap())
        );
        // load_balancing_enabled=false: loadbalancing.xml is not read (even when broken).
        let config = load_props("load_balancing_enabled=false\n", Some("<broken")).unwrap();
        assert_eq!(config.cdn, CdnConfig::default());
    }

    #[test]
    fn properties_errors_name_file_line_and_key() {
        let cases = [
            (
                "a=1\nload_balancing_enabled=yes\n",
                2,
                "load_balancing_enabled",
            ),
            ("\n\nws.port=80a\n", 3, "ws.port"),
            ("wss.port=0\n", 1, "wss.port"),
            ("media_port_from=70000\n", 1, "media_port_from"),
            (
                "media_port_from=4000\nmedia_port_to=3000\n",
                2,
                "media_port_to",
            ),
            ("ip=host.example\n", 1, "ip"),
        ];
        for (text, line, key) in cases {
            let err = load_props(text, None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("flashphoner.properties:{line}: {key}:")),
                "{text:?} → {err}"
            );
        }
        let err = load_props("load_balancing_enabled=true\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("loadbalancing.xml"), "{err}");
        let err = load_props(
            "load_balancing_enabled=true\n",
            Some("<loadbalancer mode=\"rtmp\"/>"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("loadbalancing.xml:1: loadbalancer mode:"),
            "{err}"
        );
        // The seed's RTMP distribution, pushing to each node's <rtmp> port.
        let config = load_props(
            "load_balancing_enabled=true\n",
            Some("<loadbalancer stream_distribution=\"rtmp\">\n<node id=\"1\"><ip>edge1</ip><ws>8080</ws><rtmp>1936</rtmp></node>\n</loadbalancer>"),
        )
        .unwrap();
        assert_eq!(config.cdn.stream_distribution, StreamDistribution::Rtmp);
        assert_eq!(config.cdn.nodes[0].rtmp, Some(1936));
        let err = load_props(
            "load_balancing_enabled=true\n",
            Some(
                "<loadbalancer>\n  <node id=\"1\">\n    <ws>8180</ws>\n  </node>\n</loadbalancer>",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("loadbalancing.xml:2: ip:"), "{err}");
        let err = load_props(
            "load_balancing_enabled=true\n",
            Some("<loadbalancer>\n<node id=\"1\">\n</loadbalancer>\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("loadbalancing.xml:3: xml: malformed XML"),
            "{err}"
        );
        assert!(load_props("", None).is_ok());
    }
}
