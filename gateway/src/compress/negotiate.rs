//! Which content coding a response gets (RFC 9110 section 12.5.3): the client's
//! `Accept-Encoding` with its q-values (`q=0`: not acceptable), `*` for codings it does
//! not name, `identity`; among the codings with the highest q the server's order of
//! preference decides. Pure functions on header bytes.

use http::HeaderValue;

pub use crate::config::Coding;

/// What the client's `Accept-Encoding` says of each coding, in thousandths (q=0.5 is
/// 500). `None` for a coding it does not name (then `*` speaks for it).
#[derive(Debug, Default)]
struct Accepts {
    zstd: Option<u16>,
    br: Option<u16>,
    gzip: Option<u16>,
    x_gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

fn qvalue(params: &str) -> Option<u16> {
    // `;q=0.8` (RFC 9110 section 12.4.2: 0 to 1, up to three decimals); anything
    // unreadable makes the element worthless rather than preferred.
    let mut q = 1000;
    for p in params.split(';') {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let v = v.trim();
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole: u16 = match int {
            "0" => 0,
            "1" => 1000,
            _ => return None,
        };
        let frac: u16 = format!("{frac:0<3}").parse().ok()?;
        q = whole + frac;
        if q > 1000 {
            return None;
        }
    }
    Some(q)
}

fn parse(header: &[u8]) -> Accepts {
    let mut a = Accepts::default();
    let Ok(text) = std::str::from_utf8(header) else {
        return a;
    };
    for element in text.split(',') {
        let (coding, params) = element.split_once(';').unwrap_or((element, ""));
        let Some(q) = qvalue(params) else { continue };
        let slot = match coding.trim().to_ascii_lowercase().as_str() {
            "zstd" => &mut a.zstd,
            "br" => &mut a.br,
            "gzip" => &mut a.gzip,
            "x-gzip" => &mut a.x_gzip,
            "identity" => &mut a.identity,
            "*" => &mut a.any,
            _ => continue,
        };
        // Named twice: the first counts.
        slot.get_or_insert(q);
    }
    a
}

impl Accepts {
    fn of(&self, c: Coding) -> u16 {
        let named = match c {
            Coding::Zstd => self.zstd,
            Coding::Br => self.br,
            Coding::Gzip => self.gzip.or(self.x_gzip),
        };
        named.or(self.any).unwrap_or(0)
    }

    fn identity(&self) -> u16 {
        // Acceptable unless excluded by name, or by `*;q=0` without naming it.
        self.identity.or(self.any.filter(|q| *q == 0)).unwrap_or(1)
    }
}

/// The coding for a response, from the codings the route offers in its order of
/// preference; `None`: send it as it is. Without `Accept-Encoding` nothing is applied
/// (RFC 9110 allows any coding then; clients that send none expect none).
pub fn choose(offered: &[Coding], accept: Option<&HeaderValue>) -> Option<Coding> {
    let a = parse(accept?.as_bytes());
    let mut best: Option<(Coding, u16)> = None;
    for &c in offered {
        let q = a.of(c);
        if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((c, q));
        }
    }
    let (coding, q) = best?;
    // A client that prefers the unencoded body gets it; on a tie the coding wins.
    (q >= a.identity()).then_some(coding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn pick(offered: &[Coding], ae: &str) -> Option<Coding> {
        choose(offered, Some(&HeaderValue::from_str(ae).unwrap()))
    }

    const ALL: [Coding; 3] = [Zstd, Br, Gzip];

    #[test]
    fn the_servers_order_breaks_ties() {
        assert_eq!(pick(&ALL, "gzip, deflate, br, zstd"), Some(Zstd));
        assert_eq!(
            pick(&[Gzip, Br, Zstd], "gzip, deflate, br, zstd"),
            Some(Gzip)
        );
        assert_eq!(pick(&ALL, "gzip, br"), Some(Br));
        assert_eq!(pick(&ALL, "deflate"), None);
        assert_eq!(choose(&ALL, None), None, "no Accept-Encoding: no coding");
        assert_eq!(pick(&ALL, ""), None, "empty: identity only");
    }

    #[test]
    fn q_values_rule_over_order() {
        assert_eq!(pick(&ALL, "zstd;q=0.5, gzip;q=0.9, br;q=0.7"), Some(Gzip));
        assert_eq!(pick(&ALL, "zstd;q=0, br;q=0, gzip"), Some(Gzip));
        assert_eq!(pick(&ALL, "gzip;q=0"), None, "q=0 is not acceptable");
        assert_eq!(pick(&ALL, "GZIP;Q=1.000"), Some(Gzip), "case-insensitive");
        assert_eq!(pick(&ALL, "x-gzip"), Some(Gzip));
        assert_eq!(
            pick(&ALL, "gzip;q=1.5, br;q=abc"),
            None,
            "invalid q: ignored"
        );
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(pick(&ALL, "*"), Some(Zstd));
        assert_eq!(pick(&ALL, "*;q=0.5, br;q=0"), Some(Zstd));
        assert_eq!(pick(&ALL, "*, zstd;q=0"), Some(Br));
        assert_eq!(
            pick(&ALL, "gzip;q=0.5, identity"),
            None,
            "identity preferred"
        );
        assert_eq!(
            pick(&ALL, "gzip;q=0.5, identity;q=0.5"),
            Some(Gzip),
            "tie: coding"
        );
        assert_eq!(pick(&ALL, "gzip, identity;q=0"), Some(Gzip));
        assert_eq!(
            pick(&ALL, "*;q=0"),
            None,
            "nothing acceptable: identity anyway"
        );
        assert_eq!(pick(&[Gzip], "br"), None, "only what the route offers");
    }
}
