//! How a host record is stored (journal records and checkpoints): as the record, with
//! each CHAP secret sealed under the node key (see [`crate::secrets`]), bound to the host's
//! id and the secret's direction. Serializing a [`HostRecord`] outside
//! [`crate::secrets::with_key`] fails, so no encoder can write a plain secret.
//!
//! A stored secret is either `{"sealed": "xc20p1:..."}` or, in records written before
//! secrets were sealed (superblock format 1), a plain JSON string; both load, the plain
//! one as it is. An empty secret (none set) is stored as `""`: there is nothing to hide.

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ChapMethod, ChapSettings, HostPort, HostRecord, default_host_type, default_true};
use crate::secrets;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredSecret {
    Sealed {
        sealed: String,
    },
    /// Written by builds before sealing, or an empty secret.
    Plain(String),
}

impl Default for StoredSecret {
    fn default() -> Self {
        StoredSecret::Plain(String::new())
    }
}

#[derive(Serialize, Deserialize, Default)]
struct StoredChap {
    method: ChapMethod,
    #[serde(default)]
    inbound_user: String,
    #[serde(default)]
    inbound_secret: StoredSecret,
    #[serde(default)]
    outbound_user: String,
    #[serde(default)]
    outbound_secret: StoredSecret,
}

#[derive(Serialize, Deserialize)]
struct StoredHost {
    id: u32,
    name: String,
    #[serde(default)]
    ports: Vec<HostPort>,
    #[serde(default)]
    chap: StoredChap,
    #[serde(default)]
    cluster_id: Option<u32>,
    #[serde(default = "default_host_type")]
    host_type: String,
    #[serde(default = "default_true")]
    optimized: bool,
    created_at: u64,
    #[serde(default)]
    updated_at: u64,
}

/// What the AEAD binds a secret to: the object's kind and id and the direction.
fn context(host_id: u32, direction: &str) -> String {
    format!("host {host_id} {direction} CHAP secret")
}

fn seal(host_id: u32, direction: &str, plain: &str) -> Result<StoredSecret, secrets::SecretError> {
    if plain.is_empty() {
        return Ok(StoredSecret::default());
    }
    secrets::seal_in_scope(&context(host_id, direction), plain.as_bytes())
        .map(|sealed| StoredSecret::Sealed { sealed })
}

fn open(host_id: u32, direction: &str, stored: StoredSecret) -> Result<String, String> {
    match stored {
        StoredSecret::Plain(plain) => Ok(plain),
        StoredSecret::Sealed { sealed } => {
            let bytes = secrets::open_in_scope(&context(host_id, direction), &sealed)
                .map_err(|error| error.to_string())?;
            String::from_utf8(bytes).map_err(|_| {
                format!(
                    "the sealed {} opened to bytes that are not text",
                    context(host_id, direction)
                )
            })
        }
    }
}

impl Serialize for HostRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let chap = &self.chap;
        let stored = StoredHost {
            id: self.id,
            name: self.name.clone(),
            ports: self.ports.clone(),
            chap: StoredChap {
                method: chap.method,
                inbound_user: chap.inbound_user.clone(),
                inbound_secret: seal(self.id, "inbound", &chap.inbound_secret)
                    .map_err(S::Error::custom)?,
                outbound_user: chap.outbound_user.clone(),
                outbound_secret: seal(self.id, "outbound", &chap.outbound_secret)
                    .map_err(S::Error::custom)?,
            },
            cluster_id: self.cluster_id,
            host_type: self.host_type.clone(),
            optimized: self.optimized,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        stored.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HostRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredHost::deserialize(deserializer)?;
        let id = stored.id;
        let chap = stored.chap;
        Ok(HostRecord {
            id,
            name: stored.name,
            ports: stored.ports,
            chap: ChapSettings {
                method: chap.method,
                inbound_user: chap.inbound_user,
                inbound_secret: open(id, "inbound", chap.inbound_secret)
                    .map_err(D::Error::custom)?,
                outbound_user: chap.outbound_user,
                outbound_secret: open(id, "outbound", chap.outbound_secret)
                    .map_err(D::Error::custom)?,
            },
            cluster_id: stored.cluster_id,
            host_type: stored.host_type,
            optimized: stored.optimized,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::PortKind;
    use super::*;
    use crate::secrets::{NodeKey, with_key};

    const SECRET: &str = "Distinctive-16b!";

    fn chap_host(id: u32) -> HostRecord {
        HostRecord {
            id,
            name: "h".into(),
            ports: vec![HostPort {
                kind: PortKind::Iscsi,
                address: "iqn.2000-01.com.example:h".into(),
            }],
            chap: ChapSettings {
                method: ChapMethod::MutualChap,
                inbound_user: "u".into(),
                inbound_secret: SECRET.into(),
                outbound_user: "t".into(),
                outbound_secret: "Other-secret-16b".into(),
            },
            cluster_id: None,
            host_type: "default".into(),
            optimized: true,
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn a_host_is_stored_sealed_and_loads_back() {
        let key = Arc::new(NodeKey::from_bytes([3; 32]));
        let host = chap_host(4);
        let json = with_key(&key, || serde_json::to_string(&host)).unwrap();
        assert!(
            !json.contains(SECRET) && !json.contains("Other-secret"),
            "{json}"
        );
        assert!(json.contains("\"sealed\":\"xc20p1:"), "{json}");
        let back: HostRecord = with_key(&key, || serde_json::from_str(&json)).unwrap();
        assert_eq!(back, host);
    }

    #[test]
    fn no_key_no_wrong_key_no_moved_secret() {
        let host = chap_host(4);
        assert!(serde_json::to_string(&host).is_err(), "no key in scope");
        let key = Arc::new(NodeKey::from_bytes([3; 32]));
        let json = with_key(&key, || serde_json::to_string(&host)).unwrap();
        let wrong = Arc::new(NodeKey::from_bytes([4; 32]));
        let error = with_key(&wrong, || serde_json::from_str::<HostRecord>(&json)).unwrap_err();
        assert!(error.to_string().contains("node.key"), "{error}");
        let moved = json.replace("\"id\":4", "\"id\":5");
        assert!(with_key(&key, || serde_json::from_str::<HostRecord>(&moved)).is_err());
    }

    #[test]
    fn old_plain_records_load_and_are_written_back_sealed() {
        let old = format!(
            r#"{{"id":1,"name":"h","chap":{{"method":"Chap","inbound_user":"u","inbound_secret":"{SECRET}"}},"created_at":0}}"#
        );
        let key = Arc::new(NodeKey::from_bytes([3; 32]));
        let host: HostRecord = with_key(&key, || serde_json::from_str(&old)).unwrap();
        assert_eq!(host.chap.inbound_secret, SECRET);
        assert_eq!(host.chap.outbound_secret, "");
        let again = with_key(&key, || serde_json::to_string(&host)).unwrap();
        assert!(!again.contains(SECRET), "{again}");
        assert!(again.contains(r#""outbound_secret":"""#), "{again}");
    }
}
