//! Phone numbers: a permissive pattern finds candidates (brackets, spaces, dots, dashes, `+`,
//! `00` and `011` dialling prefixes), and Google's libphonenumber metadata (the `phonenumber`
//! crate) judges them. How sure a candidate's layout makes us decides what else it needs:
//!
//! - **International** (`+44 …`, `(+44) …`, `00 44 …`, `001-674-…`, `011 44 …`): a number of any
//!   country that libphonenumber calls valid, or whose length is a possible one for its country
//!   code (test data and new ranges are not in the metadata; the layout leaves no doubt).
//! - **NANP layout** (`(813)274-4867`, `813.274.4867`, `1-813-274-4867`): ten digits grouped
//!   3-3-4 with separators, when `US` or `CA` is a region: valid for libphonenumber, or
//!   structurally a NANP number (area and exchange codes 2-9, not N11).
//! - **National with a trunk prefix** (`(0116) 4960246`, `020 7946 0958`, `06 12 34 56 78`):
//!   written with separators, starting `0`, and valid in one of the regions that dial `0`.
//! - **National without one** (`947 047 299` in Spain): written in groups, valid in a region
//!   whose numbers have no trunk prefix.
//! - Everything else, a bare run of digits above all (`3646398060`), is **weak**: a phone number
//!   only when a context word ("call me on", "tel", "mobile", ...) is near it, and valid in a
//!   region.
//!
//! Dates, times, IPv4 addresses and one-digit groups (ISBNs) are refused before any parsing, and
//! so is a weak candidate without a context word: parsing is the costly step.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::Type;
use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Metadata};

use super::validators::Verdict;

/// The regions a national number may belong to (`LLMLITE_PII_PHONE_REGIONS`).
pub const DEFAULT_REGIONS: &str = "GB,US,IE,DE,FR,ES,IT,NL";

/// The candidate pattern: an area or country code in brackets (`(0116) `, `(+44) `), or a `+`,
/// then 7 to 18 digits with at most one separator (space, dot, dash, slash, or a bracket with an
/// optional space) between two. A bracket around the whole number is not part of it.
pub(super) const PATTERN: &str = concat!(
    r"(?-u)(?:\(\+?\d{1,6}\)[ .\-]?\d(?:(?:[ .\-/]|\) ?|\)[.\-]|[ .\-]?\()?\d){3,16}",
    r"|(?:\+ ?\(?|\+?\b)\d(?:(?:[ .\-/]|\) ?|\)[.\-]|[ .\-]?\()?\d){6,17})\b",
);

/// One region: its ID, its metadata, and whether its national numbers are dialled with a
/// leading `0`.
///
/// Only the ID is kept: libphonenumber's metadata (a database decoded on its first use) is
/// looked up when a candidate needs it, not when the settings are read at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    id: Id,
}

impl PartialEq for Region {
    fn eq(&self, other: &Region) -> bool {
        self.id == other.id
    }
}

impl Eq for Region {}

impl Region {
    pub fn parse(code: &str) -> Option<Region> {
        let upper = code.trim().to_ascii_uppercase();
        let id = Id::from_str(&upper).ok()?;
        Some(Region { id })
    }

    /// The region's metadata (every region code `Id` names has some).
    pub(super) fn meta(self) -> Option<&'static Metadata> {
        DATABASE.by_id(self.id.as_ref())
    }

    /// Whether its national numbers are dialled with a leading `0`.
    fn trunk_zero(self) -> bool {
        self.meta()
            .is_some_and(|meta| meta.national_prefix() == Some("0"))
    }

    fn is_nanp(self) -> bool {
        matches!(self.id, Id::US | Id::CA)
    }
}

/// Decodes libphonenumber's metadata ahead of the first candidate that needs it. (Each country
/// code's patterns still compile on first use: all of the default regions' together hold
/// ~17 MB, country code 1 alone is 25 regions, and most processes never see a phone number.)
pub(super) fn warm(regions: &[Region]) {
    for region in regions {
        let _ = region.meta();
    }
}

/// `GB,US,...` as regions; the first unknown code is the error.
pub fn regions(list: &str) -> Result<Vec<Region>, String> {
    list.split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| Region::parse(c).ok_or_else(|| c.trim().to_owned()))
        .collect()
}

/// How a candidate is written.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    /// The digits, and the separators between them (`None` where two digits touch).
    digits: Vec<u8>,
    /// Digit-group lengths.
    groups: Vec<usize>,
    plus: bool,
    brackets: bool,
    /// The distinct separator characters (space, `.`, `-`, `/`), brackets aside.
    separators: Vec<u8>,
}

fn layout(m: &str) -> Layout {
    let mut layout = Layout {
        digits: Vec::with_capacity(m.len()),
        groups: Vec::new(),
        plus: m.starts_with('+') || m.starts_with("(+"),
        brackets: m.contains('(') || m.contains(')'),
        separators: Vec::new(),
    };
    let mut run = 0;
    for b in m.bytes() {
        if b.is_ascii_digit() {
            layout.digits.push(b - b'0');
            run += 1;
        } else {
            if run > 0 {
                layout.groups.push(run);
                run = 0;
            }
            if matches!(b, b' ' | b'.' | b'-' | b'/') && !layout.separators.contains(&b) {
                layout.separators.push(b);
            }
        }
    }
    if run > 0 {
        layout.groups.push(run);
    }
    layout
}

/// Dates, and dates with an hour, written with the separators phone numbers use:
/// `2026-11-30`, `30.11.2026`, `11/30/2026`, `2026-11-30 18`.
fn date_like(l: &Layout) -> bool {
    if l.brackets {
        return false;
    }
    let mut values = Vec::with_capacity(l.groups.len());
    let mut at = 0;
    for &n in &l.groups {
        values.push(number(l.digits.get(at..at + n).unwrap_or_default()));
        at += n;
    }
    let year = |y: u64| (1900..=2100).contains(&y);
    let day_month =
        |a: u64, b: u64| (1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12);
    let date = match (l.groups.as_slice(), values.as_slice()) {
        ([4, 2, 2, ..], [y, m, d, ..]) => year(*y) && (1..=12).contains(m) && (1..=31).contains(d),
        ([1 | 2, 1 | 2, 4, ..], [a, b, y, ..]) => year(*y) && day_month(*a, *b),
        _ => false,
    };
    date && match values.as_slice() {
        [_, _, _] => true,
        [_, _, _, hour] => *hour <= 23,
        _ => false,
    }
}

fn number(d: &[u8]) -> u64 {
    d.iter().fold(0, |acc, &x| acc * 10 + u64::from(x))
}

fn ipv4_like(l: &Layout) -> bool {
    l.separators == [b'.'] && l.groups.len() == 4 && l.groups.iter().all(|&n| n <= 3)
}

fn text(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

/// A NANP number's ten digits: area and exchange codes start 2-9 and are not N11.
fn nanp_structure(d: &[u8]) -> bool {
    match *d {
        [area, a1, a2, exchange, e1, e2, _, _, _, _] => {
            area >= 2 && exchange >= 2 && !(a1 == 1 && a2 == 1) && !(e1 == 1 && e2 == 1)
        }
        _ => false,
    }
}

/// The number types a valid number is one of (libphonenumber's `getNumberType` not UNKNOWN).
const TYPES: [Type; 10] = [
    Type::FixedLine,
    Type::Mobile,
    Type::TollFree,
    Type::PremiumRate,
    Type::SharedCost,
    Type::PersonalNumber,
    Type::Voip,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
];

/// One number-type pattern of a region, compiled once: libphonenumber's national-number
/// pattern, matched whole, and the type's possible lengths.
struct Pattern {
    regex: regex::Regex,
    lengths: Vec<u16>,
}

impl Pattern {
    fn new(descriptor: &phonenumber::metadata::Descriptor) -> Option<Pattern> {
        let source = format!("^(?:{})$", descriptor.national_number().as_str());
        let regex = regex::RegexBuilder::new(&source)
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Pattern {
            regex,
            lengths: descriptor.possible_length().to_vec(),
        })
    }

    fn matches(&self, nsn: &str) -> bool {
        let length = u16::try_from(nsn.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && self.regex.is_match(nsn)
    }
}

/// A region's metadata, compiled: its general pattern, its number types' patterns, whether it
/// dials a trunk `0`, and its fixed-line and mobile lengths.
struct Compiled {
    general: Option<Pattern>,
    types: Vec<Pattern>,
    trunk_zero: bool,
    lengths: Vec<u16>,
}

impl Compiled {
    fn new(meta: &Metadata) -> Compiled {
        let descriptors = meta.descriptors();
        let mut lengths: Vec<u16> = [descriptors.fixed_line(), descriptors.mobile()]
            .into_iter()
            .flatten()
            .flat_map(|d| d.possible_length().iter().copied())
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        Compiled {
            general: Pattern::new(descriptors.general()),
            types: TYPES
                .iter()
                .filter_map(|&kind| descriptors.get(kind))
                .filter_map(Pattern::new)
                .collect(),
            trunk_zero: meta.national_prefix() == Some("0"),
            lengths,
        }
    }

    /// `nsn` is valid here: the general pattern and one type's match it whole, as
    /// libphonenumber's `isValidNumberForRegion` decides.
    fn valid(&self, nsn: &str) -> bool {
        self.general.as_ref().is_some_and(|g| g.matches(nsn))
            && self.types.iter().any(|t| t.matches(nsn))
    }

    fn possible(&self, nsn: &str) -> bool {
        let length = u16::try_from(nsn.len()).unwrap_or(u16::MAX);
        self.lengths.contains(&length)
    }
}

/// The regions of each country code, compiled on first use and kept for the process. (The
/// crate's own matching goes through one LRU cache of 100 regexes behind one mutex: the guard
/// needs more than 100, so every check recompiled and every request queued on the lock.)
static COMPILED: LazyLock<RwLock<HashMap<u16, Arc<[Compiled]>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// The compiled regions of country code `code`, if it is one.
fn regions_of(code: u16) -> Option<Arc<[Compiled]>> {
    if let Some(found) = COMPILED.read().ok().and_then(|m| m.get(&code).cloned()) {
        return Some(found);
    }
    let metas = DATABASE.by_code(&code)?;
    let compiled: Arc<[Compiled]> = metas.into_iter().map(Compiled::new).collect();
    if let Ok(mut map) = COMPILED.write() {
        map.insert(code, Arc::clone(&compiled));
    }
    Some(compiled)
}

/// `+<digits>` is a number libphonenumber's metadata calls valid for its country code, or (when
/// `lenient`) one of a possible length. A `0` after the country code (`+44 (0)20 ...`) is the
/// trunk prefix, dropped where the country dials one.
fn international(digits: &[u8], lenient: bool) -> bool {
    let all = text(digits);
    (1..=3).any(|split| {
        let (Some(code), Some(rest)) = (all.get(..split), all.get(split..)) else {
            return false;
        };
        let Ok(code) = code.parse::<u16>() else {
            return false;
        };
        let Some(regions) = regions_of(code) else {
            return false;
        };
        regions.iter().any(|region| {
            let nsn = match rest.strip_prefix('0') {
                Some(stripped) if region.trunk_zero => stripped,
                _ => rest,
            };
            if region.valid(nsn) {
                return true;
            }
            lenient
                && if code == 1 {
                    nsn.len() == 10 && nanp_structure(&digits[1..])
                } else {
                    region.possible(nsn)
                }
        })
    })
}

/// A national number valid in `region` and written as the region writes it (its national
/// format's groups), or in threes.
fn valid_as_written(region: Region, l: &Layout) -> bool {
    if !valid_in(region, &l.digits) {
        return false;
    }
    if l.groups.iter().all(|&n| n == 3) {
        return true;
    }
    let Ok(parsed) = phonenumber::parse(Some(region.id), text(&l.digits)) else {
        return false;
    };
    let national = parsed
        .format()
        .mode(phonenumber::Mode::National)
        .to_string();
    layout(&national).groups == l.groups
}

/// A national number, as dialled within `region` (with its trunk `0`, if it has one), valid
/// for the region's country code: as libphonenumber judges a number by the region its digits
/// belong to, a Canadian number dialled in the US is valid, as are Jersey's in the UK.
fn valid_in(region: Region, digits: &[u8]) -> bool {
    let all = text(digits);
    let nsn = match all.strip_prefix('0') {
        Some(stripped) if region.trunk_zero() => stripped,
        _ if region.trunk_zero() => return false,
        _ => all.as_str(),
    };
    region
        .meta()
        .and_then(|meta| regions_of(meta.country_code()))
        .is_some_and(|regions| regions.iter().any(|r| r.valid(nsn)))
}

/// A candidate's verdict: `Yes` when its layout and libphonenumber agree, `Weak` when only a
/// context word nearby can make it one, `No` otherwise.
pub(super) fn check(regions: &[Region], m: &str, text_all: &str, start: usize) -> Verdict {
    let before = text_all.get(..start).and_then(|t| t.chars().next_back());
    let after = text_all
        .get(start + m.len()..)
        .and_then(|t| t.chars().next());
    // Part of a longer token: a word, a path, a decimal, a range.
    if before.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '/' | '_'))
        || after.is_some_and(|c| {
            c.is_ascii_digit() || matches!(c, '-' | '/' | '_') || c.is_ascii_alphabetic()
        })
        || after == Some('.')
            && text_all
                .get(start + m.len() + 1..)
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Verdict::No;
    }
    let l = layout(m);
    let count = l.digits.len();
    if !(7..=18).contains(&count) || !l.plus && (date_like(&l) || ipv4_like(&l)) {
        return Verdict::No;
    }
    // A bracket closes what it opens, once: `(020) ...`, `(+44) ...`.
    let opens = m.bytes().filter(|&b| b == b'(').count();
    let closes = m.bytes().filter(|&b| b == b')').count();
    if opens != closes || opens > 1 || m.find(')') < m.find('(') {
        return Verdict::No;
    }
    let formatted = l.groups.len() > 1;
    // International: `+`, or a `00` / `011` dialling prefix. Written in groups, a number of a
    // possible length will do; bare digits must be a valid number.
    if l.plus {
        return if (8..=15).contains(&count) && international(&l.digits, true) {
            Verdict::Yes
        } else {
            Verdict::No
        };
    }
    match l.digits.as_slice() {
        [0, 0, rest @ ..] if rest.first().is_some_and(|&d| d != 0) => {
            return if (8..=15).contains(&rest.len()) && international(rest, formatted) {
                Verdict::Yes
            } else {
                Verdict::No
            };
        }
        [0, 1, 1, rest @ ..]
            if (8..=15).contains(&rest.len()) && international(rest, formatted) =>
        {
            return Verdict::Yes;
        }
        _ => {}
    }
    // One-digit groups (ISBNs, versions) are not how national numbers are written, but for a
    // NANP leading 1.
    if l.groups.iter().skip(1).any(|&n| n == 1) {
        return Verdict::No;
    }
    if formatted {
        // NANP: 3-3-4, or 1-3-3-4.
        let nanp_groups = matches!(l.groups.as_slice(), [3, 3, 4] | [1, 3, 3, 4]);
        let nanp_digits = match l.digits.as_slice() {
            [1, rest @ ..] if rest.len() == 10 => rest,
            d => d,
        };
        if nanp_groups
            && regions.iter().any(|r| r.is_nanp())
            && (nanp_structure(nanp_digits)
                || regions
                    .iter()
                    .filter(|r| r.is_nanp())
                    .any(|&r| valid_in(r, nanp_digits)))
        {
            return Verdict::Yes;
        }
        let sane_groups = l.groups.iter().all(|&n| n >= 2) && l.separators.len() <= 2;
        if sane_groups && l.digits.first() == Some(&0) && (9..=13).contains(&count) {
            if regions
                .iter()
                .filter(|r| r.trunk_zero())
                .any(|&r| valid_in(r, &l.digits))
            {
                return Verdict::Yes;
            }
        } else if sane_groups
            && (9..=10).contains(&count)
            && regions
                .iter()
                .filter(|r| !r.trunk_zero() && !r.is_nanp())
                .any(|&r| valid_as_written(r, &l))
        {
            return Verdict::Yes;
        }
    }
    Verdict::Weak
}

/// A weak candidate's second look, once a context word was found: valid in some region.
pub(super) fn valid_anywhere(regions: &[Region], m: &str) -> bool {
    let l = layout(m);
    let digits = match l.digits.as_slice() {
        [1, rest @ ..] if rest.len() == 10 => rest,
        d => d,
    };
    (digits.len() == 10 && regions.iter().any(|r| r.is_nanp()) && nanp_structure(digits))
        || regions.iter().any(|&r| valid_in(r, digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(m: &str) -> Verdict {
        let regions = regions(DEFAULT_REGIONS).unwrap();
        check(&regions, m, m, 0)
    }

    #[test]
    fn the_families_the_old_detector_missed() {
        for yes in [
            "(813)274-4867",
            "(0116) 4960246",
            "(020)74960540",
            "(0131) 496 0243",
            "(028) 9018 0537",
            "001-674-420-6952",
            "00 44 20 7946 0958",
            "011 44 20 7946 0958",
            "+44 20 7946 0958",
            "+1-315-949-9167",
            "813.274.4867",
            "1-813-274-4867",
            "020 7946 0958",
            "06 12 34 56 78",
        ] {
            assert_eq!(verdict(yes), Verdict::Yes, "{yes}");
        }
        assert_eq!(verdict("3646398060"), Verdict::Weak);
        let regions = regions(DEFAULT_REGIONS).unwrap();
        assert!(valid_anywhere(&regions, "3646398060"));
    }

    #[test]
    fn numbers_that_are_not_phones() {
        for no in [
            "2026-11-30",
            "30.11.2026",
            "192.168.10.4",
            "978-3-16-148410-0",
            "0000123456",
            "123-456-7890",
        ] {
            assert_ne!(verdict(no), Verdict::Yes, "{no}");
        }
        assert!(regions("GB,XX").is_err());
    }
}
