//! DNS-01 through RFC 2136: TSIG-signed dynamic updates that add and remove the
//! `_acme-challenge` TXT records at the zone's primary, and the wait until the zone's
//! servers answer with the new record, so the CA is told only once it can see it.
//! `hickory-proto` builds, signs and verifies the messages; each exchange is one TCP
//! round trip (RFC 7766: every DNS server takes TCP, and an update never needs
//! retransmission logic or truncation handling that way), bounded by `[dns] timeout`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{update_message, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as Mac, TsigError};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Dns, TsigAlgorithm};

/// How far our clock and the server's may differ (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// How often the check servers are asked again while the record is not there yet.
const POLL: Duration = Duration::from_millis(500);

/// A failed update, and whether the server may have applied it all the same (it never
/// answered), in which case the caller still removes what it tried to add.
#[derive(Debug)]
pub struct UpdateError {
    pub message: String,
    pub maybe_applied: bool,
}

impl UpdateError {
    fn refused(message: String) -> Self {
        UpdateError {
            message,
            maybe_applied: false,
        }
    }
}

/// A zone we may update, with the signer made once from `[dns]`.
pub struct Zone<'a> {
    cfg: &'a Dns,
    origin: Name,
    signer: TSigner,
}

/// The name the CA looks up for `name` (a wildcard's record is its base name's).
pub fn record_name(name: &str) -> String {
    format!("_acme-challenge.{}", name.trim_start_matches("*."))
}

impl<'a> Zone<'a> {
    pub fn new(cfg: &'a Dns) -> Result<Self, String> {
        let origin = fqdn(&cfg.zone)?;
        let mac = match cfg.tsig_algorithm {
            TsigAlgorithm::HmacSha256 => Mac::HmacSha256,
            TsigAlgorithm::HmacSha384 => Mac::HmacSha384,
            TsigAlgorithm::HmacSha512 => Mac::HmacSha512,
        };
        let signer = TSigner::new(
            cfg.tsig_secret.expose().to_vec(),
            mac,
            fqdn(&cfg.tsig_key)?,
            FUDGE,
        )
        .map_err(|e| format!("TSIG key {}: {e}", cfg.tsig_key))?;
        Ok(Zone {
            cfg,
            origin,
            signer,
        })
    }

    /// Adds `value` to the TXT records at `name` (others there, such as the wildcard's
    /// and the apex's values of one order, stay).
    pub async fn add(&self, name: &str, value: &str) -> Result<(), UpdateError> {
        let rrset = self.rrset(name, value).map_err(UpdateError::refused)?;
        let msg = update_message::append(rrset, self.origin.clone(), false, false);
        self.update(msg, "add", name).await
    }

    /// Removes exactly `value` from the TXT records at `name`.
    pub async fn remove(&self, name: &str, value: &str) -> Result<(), UpdateError> {
        let rrset = self.rrset(name, value).map_err(UpdateError::refused)?;
        let msg = update_message::delete_by_rdata(rrset, self.origin.clone(), false);
        self.update(msg, "remove", name).await
    }

    /// Waits until every check server answers `value` among the TXT records at `name`,
    /// at most `propagation_timeout`.
    pub async fn wait_visible(&self, name: &str, value: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.propagation_timeout;
        for server in &self.cfg.check_servers {
            loop {
                let seen = self.txt(server, name).await;
                match &seen {
                    Ok(values) if values.iter().any(|v| v == value) => break,
                    _ if Instant::now() + POLL > deadline => {
                        let last = match seen {
                            Ok(v) => format!("it answers {} other value(s)", v.len()),
                            Err(e) => e,
                        };
                        return Err(format!(
                            "the TXT record {name} did not appear at {server} within {:?} ({last})",
                            self.cfg.propagation_timeout
                        ));
                    }
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        }
        Ok(())
    }

    fn rrset(&self, name: &str, value: &str) -> Result<RecordSet, String> {
        let name = fqdn(name)?;
        if !self.origin.zone_of(&name) {
            return Err(format!("{name} is not in the zone {}", self.origin));
        }
        let ttl = u32::try_from(self.cfg.ttl.as_secs()).unwrap_or(u32::MAX);
        let mut rrset = RecordSet::with_ttl(name.clone(), RecordType::TXT, ttl);
        rrset.insert(
            Record::from_rdata(name, ttl, RData::TXT(TXT::new(vec![value.to_owned()]))),
            0,
        );
        Ok(rrset)
    }

    /// Signs and sends an update to the primary, and reads what it said.
    async fn update(&self, mut msg: Message, op: &str, name: &str) -> Result<(), UpdateError> {
        let (cfg, server) = (self.cfg, &self.cfg.server);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| UpdateError::refused(format!("cannot sign the update: {e}")))?;
        let wire = msg
            .to_vec()
            .map_err(|e| UpdateError::refused(e.to_string()))?;
        let reply = exchange(server, &wire, cfg.timeout)
            .await
            .map_err(|e| UpdateError {
                message: format!("DNS update ({op} {name}) at {server}: {e}"),
                maybe_applied: true,
            })?;
        let answer = Message::from_vec(&reply).map_err(|e| UpdateError {
            message: format!("DNS update ({op} {name}): unreadable answer from {server}: {e}"),
            maybe_applied: true,
        })?;
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError {
            let tsig = answer.signature.as_ref().and_then(|s| s.data.error);
            return Err(UpdateError::refused(refusal(cfg, op, name, code, tsig)));
        }
        // The answer must be signed with our key too: a NOERROR nobody can vouch for
        // would let the order go on against a record that may not exist.
        if let Some(mut v) = verifier {
            v.verify(&reply).map_err(|e| UpdateError {
                message: format!(
                    "DNS update ({op} {name}): {server}'s answer is not signed with TSIG key {}: {e}",
                    cfg.tsig_key
                ),
                maybe_applied: true,
            })?;
        }
        tracing::info!(event = "dns_update", op, name, server = %server, zone = %cfg.zone);
        Ok(())
    }

    /// The TXT values at `name` as `server` answers them (asked directly, no recursion).
    async fn txt(&self, server: &str, name: &str) -> Result<Vec<String>, String> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = false;
        let mut q = Query::query(fqdn(name)?, RecordType::TXT);
        q.set_query_class(DNSClass::IN);
        msg.add_query(q);
        let wire = msg.to_vec().map_err(|e| e.to_string())?;
        let reply = exchange(server, &wire, self.cfg.timeout).await?;
        let answer = Message::from_vec(&reply).map_err(|e| format!("unreadable answer: {e}"))?;
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
            return Err(format!("{server} answered {code}"));
        }
        Ok(answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|p| String::from_utf8_lossy(p))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// What to tell an operator when the primary refuses an update.
fn refusal(cfg: &Dns, op: &str, name: &str, code: ResponseCode, tsig: Option<TsigError>) -> String {
    let server = &cfg.server;
    let why = match (code, tsig) {
        (_, Some(TsigError::BadSig)) => format!(
            "the server does not accept the signature of TSIG key {}: check the secret in tsig_secret_env and tsig_algorithm",
            cfg.tsig_key
        ),
        (_, Some(TsigError::BadKey)) => format!(
            "the server does not know TSIG key {} (or not with {:?}): check tsig_key and tsig_algorithm",
            cfg.tsig_key, cfg.tsig_algorithm
        ),
        (_, Some(TsigError::BadTime)) => format!(
            "the server's clock and ours differ by more than {FUDGE} s (TSIG key {})",
            cfg.tsig_key
        ),
        (ResponseCode::Refused, _) => format!(
            "the server refused it: does its zone {} allow updates with TSIG key {}?",
            cfg.zone, cfg.tsig_key
        ),
        (ResponseCode::NotAuth, _) => format!(
            "the server is not authoritative for {}, or does not accept TSIG key {}",
            cfg.zone, cfg.tsig_key
        ),
        (ResponseCode::NotZone, _) => {
            format!("{name} is not in the zone {} the server holds", cfg.zone)
        }
        (other, _) => format!("the server answered {other}"),
    };
    format!("DNS update ({op} {name}) at {server}: {why}")
}

fn fqdn(name: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(name).map_err(|e| format!("invalid DNS name {name:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// One DNS exchange over TCP (two-byte length, then the message), all of it within
/// `timeout`.
async fn exchange(server: &str, wire: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let len = u16::try_from(wire.len()).map_err(|_| "the message is too large".to_owned())?;
    let run = async {
        let mut s = TcpStream::connect(server).await?;
        let mut out = Vec::with_capacity(wire.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(wire);
        s.write_all(&out).await?;
        let n = s.read_u16().await?;
        let mut reply = vec![0; usize::from(n)];
        s.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::record_name;

    #[test]
    fn a_wildcard_is_proved_at_its_base_name() {
        assert_eq!(record_name("*.example.com"), "_acme-challenge.example.com");
        assert_eq!(record_name("example.com"), "_acme-challenge.example.com");
    }
}
