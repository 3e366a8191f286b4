//! Checks a custom domain's DNS records against what ctrl asked the user to
//! publish, with a real resolver (hickory) and no cache, so every check sees
//! the records as they are now.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use serde::{Deserialize, Serialize};

use crate::AcmeError;

use ctrl_core::domains::{
    is_apex, ownership_txt_name as txt_name, ownership_txt_value as txt_value,
};

/// What a domain must show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The custom domain.
    pub domain: String,
    /// Where its CNAME must point.
    pub target_cname: String,
    /// The ownership token (`_ctrl.{domain}` TXT `ctrl-domain-verify={token}`).
    pub token: String,
    /// Another workspace has this domain verified: only the TXT record proves
    /// ownership then.
    pub contested: bool,
    /// The edge's public addresses an apex must point at (empty: any address).
    pub apex_addresses: Vec<IpAddr>,
}

/// What one check found, and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The CNAME points at the target.
    pub cname_verified: bool,
    /// The TXT ownership record is there.
    pub ownership_verified: bool,
    /// The domain may route (CNAME or TXT; TXT if contested; an apex also
    /// needs its addresses).
    pub verified: bool,
    /// What was found against what was expected, for the user.
    pub summary: String,
}

/// A resolver with fixed name servers and no cache.
#[derive(Debug, Clone)]
pub struct Checker {
    resolver: TokioResolver,
}

impl Checker {
    /// Asks `nameservers` (empty: none — an error) with `timeout` per query.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, AcmeError> {
        if nameservers.is_empty() {
            return Err(AcmeError::Config(
                "custom_domains.nameservers must name at least one resolver".into(),
            ));
        }
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = timeout;
        opts.attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| AcmeError::Config(format!("cannot build the DNS resolver: {e}")))?;
        Ok(Self { resolver })
    }

    /// One check of `e`'s records.
    pub async fn check(&self, e: &Expected) -> Verdict {
        let apex = is_apex(&e.domain);
        let mut notes = Vec::new();
        let want_cname = normalize(&e.target_cname);

        let cname = if apex {
            None
        } else {
            match self.records(&e.domain, RecordType::CNAME).await {
                Ok(rs) => rs.into_iter().find_map(|r| match r {
                    RData::CNAME(c) => Some(normalize(&c.0.to_ascii())),
                    _ => None,
                }),
                Err(why) => {
                    notes.push(format!("CNAME {}: {why}", e.domain));
                    None
                }
            }
        };
        let cname_verified = cname
            .as_deref()
            .is_some_and(|c| c == want_cname && c != normalize(&e.domain));
        if !apex && !cname_verified {
            match &cname {
                Some(c) => notes.push(format!(
                    "CNAME {} points at {c}, expected {want_cname}",
                    e.domain
                )),
                None if notes.is_empty() => {
                    notes.push(format!("no CNAME at {} (expected {want_cname})", e.domain));
                }
                None => {}
            }
        }

        let name = txt_name(&e.domain);
        let want_txt = txt_value(&e.token);
        let txts: Vec<String> = match self.records(&name, RecordType::TXT).await {
            Ok(rs) => rs
                .into_iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect(),
            Err(why) => {
                notes.push(format!("TXT {name}: {why}"));
                Vec::new()
            }
        };
        let ownership_verified = txts
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(&want_txt));
        if !ownership_verified {
            if txts.is_empty() {
                notes.push(format!("no TXT at {name} (expected \"{want_txt}\")"));
            } else {
                notes.push(format!(
                    "TXT {name} is {}, expected \"{want_txt}\"",
                    txts.iter()
                        .map(|t| format!("\"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }

        let mut addresses_ok = true;
        if apex {
            let addrs = self.addresses(&e.domain).await;
            addresses_ok = match &addrs {
                Ok(found) if found.is_empty() => false,
                Ok(found) => {
                    e.apex_addresses.is_empty()
                        || found.iter().all(|a| e.apex_addresses.contains(a))
                }
                Err(_) => false,
            };
            if !addresses_ok {
                let found = match addrs {
                    Ok(a) if !a.is_empty() => a
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    Ok(_) => "no A/AAAA records".into(),
                    Err(why) => why,
                };
                let want = if e.apex_addresses.is_empty() {
                    "any address".into()
                } else {
                    e.apex_addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                notes.push(format!(
                    "{} (apex) resolves to {found}, expected {want}",
                    e.domain
                ));
            }
        }

        let verified = if apex {
            ownership_verified && addresses_ok
        } else if e.contested {
            ownership_verified
        } else {
            cname_verified || ownership_verified
        };
        if e.contested && !ownership_verified {
            notes.push("another workspace uses this domain: the TXT record is required".into());
        }
        let summary = if verified {
            let mut how = Vec::new();
            if cname_verified {
                how.push("CNAME");
            }
            if ownership_verified {
                how.push("TXT");
            }
            if apex {
                how.push("A/AAAA");
            }
            format!("verified by {}", how.join(" + "))
        } else {
            notes.join("; ")
        };
        Verdict {
            cname_verified,
            ownership_verified,
            verified,
            summary,
        }
    }

    /// The records of one type at `name`; "no records" is an empty list,
    /// other failures a short reason.
    async fn records(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), kind).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == kind)
                .map(|r| r.data.clone())
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("lookup failed: {e}")),
        }
    }

    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let mut out = Vec::new();
        for kind in [RecordType::A, RecordType::AAAA] {
            for r in self.records(name, kind).await? {
                match r {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// Lowercase, without the trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
