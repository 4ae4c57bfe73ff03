//! Validation of `[sites.on_demand]`: the ask endpoint that decides which names not in
//! the file get a certificate, and the bounds on how many and how fast.

use super::{at, Validator};
use crate::config::doc::Seg;
use crate::config::schema::OnDemandSection;
use crate::config::{defaults, CertSource, Challenge, OnDemand};

impl Validator<'_> {
    pub(super) fn on_demand(
        &mut self,
        b: &[Seg],
        o: Option<OnDemandSection>,
        certificate: &CertSource,
        earlier: &mut bool,
    ) -> Option<OnDemand> {
        let o = o?;
        let b = at(b, "on_demand");
        match certificate {
            CertSource::Acme(a) if matches!(a.challenge, Challenge::Dns01(_)) => self.err(
                &b,
                "on-demand names are customers' own domains, outside the [dns] zone: use \
                 challenge = \"http-01\" or \"tls-alpn-01\" on this site",
            ),
            CertSource::Acme(_) => {}
            _ => self.err(
                &b,
                "on-demand certificates come from ACME: set certificate = \"acme\" and [sites.acme]",
            ),
        }
        if std::mem::replace(earlier, true) {
            self.err(
                &b,
                "only one site may issue on demand (its ACME settings and ask endpoint serve every name not in the file)",
            );
        }
        let ask_ok = (o.ask.starts_with("http://") || o.ask.starts_with("https://"))
            && o.ask.len() > "https://".len()
            && !o.ask.contains('#')
            && !o.ask.contains(char::is_whitespace);
        if !ask_ok {
            self.err(
                &at(&b, "ask"),
                format!(
                    "invalid ask URL {:?}: write the app's endpoint, e.g. \"http://api:8000/tls/allowed\" (the gateway adds ?domain=NAME)",
                    o.ask
                ),
            );
        }
        let orders_per_minute = o.orders_per_minute.unwrap_or(defaults::ORDERS_PER_MINUTE);
        if orders_per_minute == 0 {
            self.err(&at(&b, "orders_per_minute"), "must be at least 1");
        }
        let max_names = o.max_names.unwrap_or(defaults::MAX_NAMES);
        if max_names == 0 {
            self.err(&at(&b, "max_names"), "must be at least 1");
        }
        Some(OnDemand {
            ask: o.ask,
            ask_timeout: self.positive(
                &at(&b, "ask_timeout"),
                o.ask_timeout,
                defaults::ASK_TIMEOUT,
            ),
            handshake_wait: self.positive(
                &at(&b, "handshake_wait"),
                o.handshake_wait,
                defaults::HANDSHAKE_WAIT,
            ),
            orders_per_minute,
            max_names,
            refusal_ttl: self.positive(
                &at(&b, "refusal_ttl"),
                o.refusal_ttl,
                defaults::REFUSAL_TTL,
            ),
        })
    }
}
