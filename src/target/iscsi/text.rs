//! Text requests in full feature phase: SendTargets (discovery and normal sessions).
//! Other keys are answered NotUnderstood (nothing is renegotiated after login).

use super::keys;
use super::{Portal, session::Directory};

/// Builds the answer to the text keys in `request` into `out`. `discovery` decides what an
/// empty `SendTargets=` means (RFC 7143 Appendix C: all targets in discovery, this one in
/// a normal session: here they are the same target).
pub fn answer(request: &[u8], dir: &dyn Directory, out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    let pairs = keys::parse(request)?;
    for (key, value) in &pairs {
        if key == "SendTargets" {
            let name = dir.target_name();
            if value == "All" || value.is_empty() || *value == name {
                send_targets(&name, &dir.portals(), out);
            }
        } else {
            keys::push(out, key, "NotUnderstood");
        }
    }
    Ok(())
}

fn send_targets(name: &str, portals: &[Portal], out: &mut Vec<u8>) {
    keys::push(out, "TargetName", name);
    for portal in portals {
        let address = match portal.address {
            std::net::SocketAddr::V4(a) => format!("{}:{},{}", a.ip(), a.port(), portal.tpgt),
            std::net::SocketAddr::V6(a) => format!("[{}]:{},{}", a.ip(), a.port(), portal.tpgt),
        };
        keys::push(out, "TargetAddress", &address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bracket_ipv6() {
        let mut out = Vec::new();
        let portals = [
            Portal {
                address: "10.0.0.1:3260".parse().unwrap(),
                tpgt: 1,
            },
            Portal {
                address: "[fe80::1]:3261".parse().unwrap(),
                tpgt: 2,
            },
        ];
        send_targets("iqn.x", &portals, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "TargetName=iqn.x\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[fe80::1]:3261,2\0"
        );
    }
}
