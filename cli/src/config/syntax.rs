//! The shape of values in the configuration files: names, networks, durations, tokens. Pure
//! text checks, shared by validation and the commands that take such values.

/// A name pgctl may put into SQL unquoted-safe: lowercase letters, digits, '_', not a digit first.
pub fn is_sql_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// RFC 1123 label: what Consul DNS and container names accept.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// 8-4-4-4-12 hexadecimal digits.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether IP `address` lies in network `cidr` (same family); false for names and bad input.
pub(crate) fn in_network(address: &str, cidr: &str) -> bool {
    use std::net::IpAddr;
    let (Some((net, len)), Ok(addr)) = (cidr.split_once('/'), address.parse::<IpAddr>()) else {
        return false;
    };
    let Ok(len) = len.parse::<u32>() else { return false };
    match (addr, net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `address/prefix` with an IPv4 or IPv6 address and a prefix length that fits it.
/// `30s`, `5m`, `1h`: a number and one unit, as Prometheus and Alertmanager read it.
pub(crate) fn is_prometheus_duration(text: &str) -> bool {
    let Some(unit) = text.chars().last() else { return false };
    let number = &text[..text.len() - unit.len_utf8()];
    "smhd".contains(unit) && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && number != "0"
}

pub(crate) fn is_cidr(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else { return false };
    match (addr.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}
