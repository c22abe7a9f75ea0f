//! Who may see an artifact: Flock's visibility policies, with its JSON form (tagged by `kind`),
//! checked against the consuming agent's [`Identity`].
//!
//! Reading fails closed: a policy of unknown kind, or one missing its fields (Flock ≤ 0.5.602
//! persisted only the kind), becomes a Private policy for nobody, never Public.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::time::{Timestamp, format_iso_duration, parse_iso_duration};

/// A consumer as visibility sees it: the agent's name, labels and tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub labels: BTreeSet<String>,
    pub tenant_id: Option<String>,
}

impl Identity {
    pub fn named(name: impl Into<String>) -> Identity {
        Identity {
            name: name.into(),
            ..Identity::default()
        }
    }
}

/// A visibility policy, set by the producer of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Everyone (the default).
    #[default]
    Public,
    /// Only the named agents; an empty set means nobody.
    Private { agents: BTreeSet<String> },
    /// Agents carrying **all** of these labels.
    Labelled { required_labels: BTreeSet<String> },
    /// Agents of this tenant; `None` means every agent.
    Tenant { tenant_id: Option<String> },
    /// Nobody until `created_at + ttl`, then `then` (or everyone).
    After {
        ttl: Duration,
        then: Option<Box<Visibility>>,
    },
}

impl Visibility {
    /// Only these agents (Flock's `only_for`).
    pub fn only_for<I: IntoIterator<Item = S>, S: Into<String>>(agents: I) -> Visibility {
        Visibility::Private {
            agents: agents.into_iter().map(Into::into).collect(),
        }
    }

    /// Nobody: what unreadable policies become.
    pub fn nobody() -> Visibility {
        Visibility::Private {
            agents: BTreeSet::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Visibility::Public => "Public",
            Visibility::Private { .. } => "Private",
            Visibility::Labelled { .. } => "Labelled",
            Visibility::Tenant { .. } => "Tenant",
            Visibility::After { .. } => "After",
        }
    }

    /// Whether `identity` may see an artifact created at `created_at`, at instant `now`.
    pub fn allows(&self, identity: &Identity, created_at: Timestamp, now: Timestamp) -> bool {
        match self {
            Visibility::Public => true,
            Visibility::Private { agents } => agents.contains(&identity.name),
            Visibility::Labelled { required_labels } => required_labels.is_subset(&identity.labels),
            Visibility::Tenant { tenant_id } => match tenant_id {
                None => true,
                Some(tenant) => identity.tenant_id.as_deref() == Some(tenant.as_str()),
            },
            Visibility::After { ttl, then } => {
                if now < created_at.plus(*ttl) {
                    return false;
                }
                then.as_deref()
                    .is_none_or(|then| then.allows(identity, created_at, now))
            }
        }
    }

    /// The JSON form Flock writes.
    pub fn to_json(&self) -> Value {
        match self {
            Visibility::Public => json!({"kind": "Public"}),
            Visibility::Private { agents } => json!({"kind": "Private", "agents": agents}),
            Visibility::Labelled { required_labels } => {
                json!({"kind": "Labelled", "required_labels": required_labels})
            }
            Visibility::Tenant { tenant_id } => json!({"kind": "Tenant", "tenant_id": tenant_id}),
            Visibility::After { ttl, then } => json!({
                "kind": "After",
                "ttl": format_iso_duration(*ttl),
                "then": then.as_deref().map(Visibility::to_json),
            }),
        }
    }

    /// Reads the JSON form, failing closed: anything unknown or partial is [`Visibility::nobody`].
    pub fn from_json(value: &Value) -> Visibility {
        Self::parse(value).unwrap_or_else(Visibility::nobody)
    }

    fn parse(value: &Value) -> Option<Visibility> {
        let object: &Map<String, Value> = value.as_object()?;
        let names = |field: &str| -> Option<BTreeSet<String>> {
            object
                .get(field)?
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        Some(match object.get("kind")?.as_str()? {
            "Public" => Visibility::Public,
            "Private" => {
                let agents = names("agents")?;
                if agents.is_empty() {
                    return None;
                }
                Visibility::Private { agents }
            }
            "Labelled" => Visibility::Labelled {
                required_labels: names("required_labels")?,
            },
            "Tenant" => Visibility::Tenant {
                tenant_id: match object.get("tenant_id")? {
                    Value::Null => None,
                    Value::String(tenant) => Some(tenant.clone()),
                    _ => return None,
                },
            },
            "After" => {
                let ttl = match object.get("ttl")? {
                    Value::String(text) => parse_iso_duration(text).ok()?,
                    // Seconds, as some serialisers write a timedelta.
                    Value::Number(n) => {
                        let seconds = n.as_f64()?;
                        if !(seconds >= 0.0 && seconds.is_finite()) {
                            return None;
                        }
                        Duration::from_secs_f64(seconds)
                    }
                    _ => return None,
                };
                let then = match object.get("then") {
                    None | Some(Value::Null) => None,
                    Some(nested) => Some(Box::new(Self::parse(nested)?)),
                };
                Visibility::After { ttl, then }
            }
            _ => return None,
        })
    }
}

impl Serialize for Visibility {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Visibility {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Visibility, D::Error> {
        Ok(Visibility::from_json(&Value::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, labels: &[&str], tenant: Option<&str>) -> Identity {
        Identity {
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            tenant_id: tenant.map(str::to_string),
        }
    }

    #[test]
    fn rules_follow_flock() {
        let t0 = Timestamp::parse("2026-11-26T00:00:00Z").unwrap();
        let ada = identity("ada", &["finance", "eu"], Some("acme"));
        let bob = identity("bob", &["finance"], None);
        assert!(Visibility::Public.allows(&bob, t0, t0));
        assert!(Visibility::only_for(["ada"]).allows(&ada, t0, t0));
        assert!(!Visibility::only_for(["ada"]).allows(&bob, t0, t0));
        assert!(!Visibility::nobody().allows(&ada, t0, t0));
        let labelled = Visibility::Labelled {
            required_labels: ["finance".to_string(), "eu".to_string()].into(),
        };
        assert!(labelled.allows(&ada, t0, t0));
        assert!(!labelled.allows(&bob, t0, t0), "every label is required");
        let tenant = Visibility::Tenant {
            tenant_id: Some("acme".into()),
        };
        assert!(tenant.allows(&ada, t0, t0));
        assert!(!tenant.allows(&bob, t0, t0));
        assert!(Visibility::Tenant { tenant_id: None }.allows(&bob, t0, t0));
        let after = Visibility::After {
            ttl: Duration::from_secs(7 * 86_400),
            then: Some(Box::new(Visibility::only_for(["ada"]))),
        };
        let week = t0.plus(Duration::from_secs(7 * 86_400));
        assert!(!after.allows(&ada, t0, t0.plus(Duration::from_secs(86_400))));
        assert!(after.allows(&ada, t0, week));
        assert!(!after.allows(&bob, t0, week));
    }

    #[test]
    fn json_round_trips_in_flocks_shape() {
        let policies = [
            Visibility::Public,
            Visibility::only_for(["a", "b"]),
            Visibility::Labelled {
                required_labels: ["x".to_string()].into(),
            },
            Visibility::Tenant {
                tenant_id: Some("t".into()),
            },
            Visibility::Tenant { tenant_id: None },
            Visibility::After {
                ttl: Duration::from_secs(7 * 86_400),
                then: Some(Box::new(Visibility::only_for(["a"]))),
            },
            Visibility::After {
                ttl: Duration::from_secs(90),
                then: None,
            },
        ];
        for policy in policies {
            let text = serde_json::to_string(&policy).unwrap();
            let back: Visibility = serde_json::from_str(&text).unwrap();
            assert_eq!(back, policy, "{text}");
        }
        assert_eq!(
            serde_json::to_value(Visibility::After {
                ttl: Duration::from_secs(7 * 86_400),
                then: None
            })
            .unwrap(),
            json!({"kind": "After", "ttl": "P7D", "then": null})
        );
        let days: Visibility =
            serde_json::from_str(r#"{"kind":"After","ttl":"P7D","then":{"kind":"Public"}}"#)
                .unwrap();
        assert_eq!(
            days,
            Visibility::After {
                ttl: Duration::from_secs(7 * 86_400),
                then: Some(Box::new(Visibility::Public))
            },
            "a P7D embargo keeps its days"
        );
    }

    #[test]
    fn unknown_or_partial_policies_fail_closed() {
        for text in [
            r#"{"kind":"Private"}"#,
            r#"{"kind":"Private","agents":[]}"#,
            r#"{"kind":"Labelled"}"#,
            r#"{"kind":"Tenant"}"#,
            r#"{"kind":"After"}"#,
            r#"{"kind":"After","ttl":"P1Y"}"#,
            r#"{"kind":"After","ttl":"PT1H","then":{"kind":"Mystery"}}"#,
            r#"{"kind":"Secret"}"#,
            r#"{"agents":["a"]}"#,
            r#""Public""#,
            r#"{"kind":"Private","agents":[1]}"#,
        ] {
            let policy: Visibility = serde_json::from_str(text).unwrap();
            assert_eq!(policy, Visibility::nobody(), "{text}");
        }
    }
}
