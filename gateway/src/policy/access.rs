//! Who may use a route: its address allow and deny lists.

use std::net::IpAddr;

use ipnet::IpNet;

/// Deny wins; a non-empty allow list admits only what it lists.
pub fn address_allowed(ip: Option<IpAddr>, allow: &[IpNet], deny: &[IpNet]) -> bool {
    if allow.is_empty() && deny.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    let ip = crate::net::canonical(ip);
    if deny.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn allow_and_deny() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(address_allowed(ip("1.2.3.4"), &[], &[]));
        assert!(address_allowed(ip("10.1.1.1"), &nets(&["10.0.0.0/8"]), &[]));
        assert!(!address_allowed(
            ip("11.1.1.1"),
            &nets(&["10.0.0.0/8"]),
            &[]
        ));
        assert!(!address_allowed(
            ip("10.6.6.6"),
            &nets(&["10.0.0.0/8"]),
            &nets(&["10.6.0.0/16"])
        ));
        assert!(!address_allowed(ip("6.6.6.6"), &[], &nets(&["6.6.6.6/32"])));
        assert!(address_allowed(
            ip("::ffff:10.0.0.1"),
            &nets(&["10.0.0.0/8"]),
            &[]
        ));
        assert!(!address_allowed(None, &nets(&["10.0.0.0/8"]), &[]));
    }
}
