//! The validators the scanner runs on each candidate: Luhn and issuer prefixes for cards, the
//! ISO 13616 formats of the `iban_validate` crate for IBANs, area/group/serial rules for SSNs,
//! prefix rules for NINOs, octet ranges for IPs, and the checks that a match is not part of a
//! longer token. (Phone numbers are checked in [`phone`](super::phone).)
//!
//! A candidate a validator is unsure of (a bare run of digits that could be an SSN, a card
//! number of an unknown issuer, a lower-case NINO) is *weak*: it becomes a finding only with a
//! context word for its entity nearby ([`context`](super::context)).
//!
//! Validators slice with `get` and match digits by slice patterns, so no text can make them
//! panic.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What a validator makes of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    No,
    Yes,
    /// Only with a context word for the entity nearby.
    Weak,
}

fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The character before a match, for checks that a match does not continue a longer token.
fn before(text: &str, start: usize) -> Option<char> {
    text.get(..start)?.chars().next_back()
}

fn after(text: &str, end: usize) -> Option<char> {
    text.get(end..)?.chars().next()
}

/// The number a run of decimal digits spells.
fn number(d: &[u8]) -> u32 {
    d.iter().fold(0, |acc, &x| acc * 10 + u32::from(x))
}

pub(super) fn valid_email(m: &str, _: &str, _: usize) -> bool {
    let Some((local, domain)) = m.rsplit_once('@') else {
        return false;
    };
    !local.ends_with('.') && !local.contains("..") && !domain.contains("..")
}

/// Publicly documented test card numbers: not anybody's card.
const TEST_CARDS: &[&str] = &[
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "5200828282828210",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
    "38520000023237",
    "6200000000000005",
    "4000000000000002",
    "4000000000000077",
];

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn known_issuer(d: &[u8]) -> bool {
    let prefix = |n: usize| number(d.get(..n).unwrap_or(d));
    let len = d.len();
    match d.first() {
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(5) => (51..=55).contains(&prefix(2)) && len == 16,
        Some(2) => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(3) => match prefix(2) {
            34 | 37 => len == 15,
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            // JCB's registered range is 3528-3589; cards in the wider 35 range are seen too.
            35 => (16..=19).contains(&len),
            _ => false,
        },
        Some(6) => {
            prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62
        }
        _ => false,
    }
}

/// A Luhn-valid number of 13-19 digits: a card of a known issuer, or weak (a card only where
/// the text says so) when its prefix is no issuer's.
pub(super) fn grade_card(m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c == '-' || c == '.' || c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c == '-' || c.is_ascii_alphanumeric())
    {
        return Verdict::No;
    }
    // Separators, if any, must be consistent: one kind, in groups.
    if m.contains(' ') && m.contains('-') {
        return Verdict::No;
    }
    let d = digits(m);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return Verdict::No;
    }
    let plain: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    if TEST_CARDS.contains(&plain.as_str()) {
        Verdict::No
    } else if known_issuer(&d) {
        Verdict::Yes
    } else {
        Verdict::Weak
    }
}

/// An IBAN in the ISO 13616 format of its country (the `iban_validate` crate: country, length,
/// BBAN structure, mod-97).
pub(super) fn valid_iban(m: &str, text: &str, start: usize) -> bool {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    let compact: String = m.chars().filter(|c| *c != ' ').collect();
    iban::Iban::from_str(&compact).is_ok()
}

/// `536-90-4399` or `536 90 4399`; nine bare digits are weak.
pub(super) fn grade_ssn(m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Verdict::No;
    }
    // One kind of separator, twice, or none.
    let separators: Vec<char> = m.chars().filter(|c| !c.is_ascii_digit()).collect();
    let strong = match separators.as_slice() {
        [first, second] if first == second => true,
        [] => false,
        _ => return Verdict::No,
    };
    let d = digits(m);
    let [a1, a2, a3, g1, g2, s1, s2, s3, s4] = *d.as_slice() else {
        return Verdict::No;
    };
    let (area, group, serial) = (
        number(&[a1, a2, a3]),
        number(&[g1, g2]),
        number(&[s1, s2, s3, s4]),
    );
    let plain: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    let valid = area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        // Famous examples, never issued to anyone.
        && !matches!(plain.as_str(), "078051120" | "219099999" | "123456789");
    match (valid, strong) {
        (false, _) => Verdict::No,
        (true, true) => Verdict::Yes,
        (true, false) => Verdict::Weak,
    }
}

/// HMRC's prefix rules; written in lower or mixed case it is weak.
pub(super) fn grade_nino(m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Verdict::No;
    }
    let compact: Vec<char> = m
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let [first, second, ..] = *compact.as_slice() else {
        return Verdict::No;
    };
    let prefix: String = [first, second].iter().collect();
    let valid = !"DFIQUV".contains(first)
        && !"DFIOQUV".contains(second)
        && !matches!(
            prefix.as_str(),
            "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ"
        );
    match (valid, m.bytes().any(|b| b.is_ascii_lowercase())) {
        (false, _) => Verdict::No,
        (true, false) => Verdict::Yes,
        (true, true) => Verdict::Weak,
    }
}

pub(super) fn valid_ipv4(m: &str, text: &str, start: usize) -> bool {
    // Not part of a longer dotted run (a version string such as 1.2.3.4.5), nor of a hyphenated
    // token (`release-1.2.3.4`).
    if before(text, start).is_some_and(|c| c == '.' || c == '-' || c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| {
            c.is_ascii_digit()
                || (c == '.'
                    && text
                        .get(start + m.len() + 1..)
                        .is_some_and(|rest| rest.starts_with(|d: char| d.is_ascii_digit())))
        })
    {
        return false;
    }
    // The unspecified and broadcast addresses are nobody's.
    Ipv4Addr::from_str(m).is_ok_and(|ip| !ip.is_unspecified() && !ip.is_broadcast())
}

pub(super) fn valid_ipv6(m: &str, text: &str, start: usize) -> bool {
    let end = start + m.len();
    // A colon after the address is prose ("... 1bce: retry") unless more hex follows it.
    let continues = match after(text, end) {
        Some(':') => text
            .get(end + 1..)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_hexdigit())),
        Some(c) => c.is_ascii_alphanumeric(),
        None => false,
    };
    if continues || before(text, start).is_some_and(|c| c.is_ascii_hexdigit() || c == ':') {
        return false;
    }
    Ipv6Addr::from_str(m).is_ok()
}

pub(super) fn valid_aws_secret(m: &str, text: &str, start: usize) -> bool {
    // Exactly 40 characters of the secret alphabet, not part of a longer token.
    if m.len() != 40
        || before(text, start).is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '+')
    {
        return false;
    }
    // A 40-character secret-looking string (mixed case and a digit, as generated secrets are)
    // next to an access key ID or an AWS mention within the 80 characters before it.
    let head = text.get(..start).unwrap_or_default();
    let window_start = head.char_indices().rev().nth(79).map_or(0, |(i, _)| i);
    let window = head.get(window_start..).unwrap_or_default();
    let near_aws = window.contains("AKIA")
        || window.contains("ASIA")
        || window.to_ascii_lowercase().contains("aws");
    near_aws
        && !m.bytes().all(|b| b.is_ascii_hexdigit())
        && m.bytes().any(|b| b.is_ascii_lowercase())
        && m.bytes().any(|b| b.is_ascii_uppercase())
        && m.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use crate::pii::scanner::tests::entities;

    #[test]
    fn validated_detections() {
        assert_eq!(
            entities("card 4539 1488 0343 6467 ok"),
            ["CREDIT_CARD=4539 1488 0343 6467"]
        );
        assert!(entities("card 4539 1488 0343 6468 fails Luhn").is_empty());
        assert!(entities("test card 4111 1111 1111 1111").is_empty());
        assert_eq!(
            entities("IBAN GB82 WEST 1234 5698 7654 32."),
            ["IBAN_CODE=GB82 WEST 1234 5698 7654 32"]
        );
        assert!(entities("IBAN GB82 WEST 1234 5698 7654 33").is_empty());
        assert_eq!(entities("ssn 536-90-4399"), ["US_SSN=536-90-4399"]);
        assert!(entities("ssn 666-90-4399 and 900-12-1234").is_empty());
        assert_eq!(entities("NI AB 12 34 56 C"), ["UK_NINO=AB 12 34 56 C"]);
        assert!(entities("NI QQ 12 34 56 C").is_empty());
        assert_eq!(
            entities("mail jo.bloggs@example.co.uk now"),
            ["EMAIL_ADDRESS=jo.bloggs@example.co.uk"]
        );
        assert_eq!(
            entities("from 192.168.10.4 on"),
            ["IP_ADDRESS=192.168.10.4"]
        );
        assert!(entities("version 1.2.3.4.5 and 300.1.1.1").is_empty());
        assert_eq!(
            entities("v6 2001:db8::8a2e:370:7334"),
            ["IP_ADDRESS=2001:db8::8a2e:370:7334"]
        );
        assert_eq!(
            entities("id AKIAIOSFODNN7EXAMPLE"),
            ["AWS_ACCESS_KEY=AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            entities("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ["AWS_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
        );
        assert!(entities("commit 1f3a9c0b2d4e6f8091a2b3c4d5e6f708192a3b4c").is_empty());
        assert_eq!(
            entities("call +44 20 7946 0958 or 020 7946 0958"),
            [
                "PHONE_NUMBER=+44 20 7946 0958",
                "PHONE_NUMBER=020 7946 0958"
            ]
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(entities(pem), [format!("PRIVATE_KEY={pem}")]);
    }

    #[test]
    fn digits_of_other_scripts_are_not_digits_and_never_panic() {
        for text in [
            "GB२२ABCDEFGHIJKLMN",
            "GB82 WEST १२३४ 5698 7654 32",
            "५३६-९०-४३९९",
            "536-९०-4399",
            "AB १२ ३४ ५६ C",
            "card ４５３９ １４８８ ０３４３ ６４６７",
            "from ١٩٢.١٦٨.١٠.٤",
        ] {
            assert!(entities(text).is_empty(), "{text}: {:?}", entities(text));
        }
    }
}
