"""Writes heldout.jsonl: a second labelled corpus for the PII guard, which the detectors are
never tuned on (the tuning corpus is corpus.jsonl, made by generate_corpus.py with Faker).

It is made by other libraries, in other locales and layouts:
- mimesis (not Faker) for e-mails, card numbers, IP addresses, names and prose filler, and for
  the national phone numbers of nine locales;
- schwifty for IBANs of fifteen countries;
- Google's libphonenumber (the Python `phonenumbers` port) as the labelling oracle for phones:
  a generated number is kept as a positive only when libphonenumber says it is a valid number,
  then written in one of a dozen layouts (national, brackets around the area code, E.164,
  `00`/`011` dialling prefixes, dots, bare digits after a context word, ...);
- hand-written layouts for the formats these libraries lack (NINOs, AWS keys, PEM keys);
- about 1,500 generated hard negatives: UUIDs, hashes, timestamps, epoch times, versions,
  order and invoice numbers, Luhn-failing 16-digit numbers, prices, parcel tracking IDs,
  ISBNs and ISSNs, EANs, IMEI-like serials, dates, coordinates, meeting IDs, and bare
  10-digit IDs with no phone context.

Offsets are in characters of the text (the texts are ASCII apart from some prose, so the test
converts them). Rerun with
    pip install mimesis==22.2.0 schwifty==2026.10.1 phonenumbers==9.0.43
    python3 tests/pii/generate_heldout.py
and commit both this script and its output. A fresh corpus from another seed, scored by the same
test without being committed:
    HELDOUT_SEED=7 HELDOUT_OUT=/tmp/heldout-7.jsonl python3 tests/pii/generate_heldout.py
    PII_HELDOUT=/tmp/heldout-7.jsonl cargo test -p llmlite-tests --test pii_corpus -- --nocapture
"""

import hashlib
import ipaddress
import json
import os
import random
import string
import uuid
from pathlib import Path

import phonenumbers
from mimesis import Code, Cryptographic, Datetime, Internet, Payment, Person, Text
from mimesis.enums import CardType
from mimesis.locales import Locale
from schwifty import IBAN

# HELDOUT_SEED and HELDOUT_OUT make a fresh corpus elsewhere (a check the committed one was not
# tuned on); the committed corpus is the default seed's.
SEED = int(os.environ.get("HELDOUT_SEED", "20261130"))
random.seed(SEED)
rng = random.Random(SEED)

person_en = Person(Locale.EN, seed=SEED)
payment = Payment(seed=SEED)
internet = Internet(seed=SEED)
code = Code(seed=SEED)
crypto = Cryptographic(seed=SEED)
dates = Datetime(seed=SEED)
text_en = Text(Locale.EN, seed=SEED)

# Locale (mimesis) -> region (libphonenumber).
PHONE_LOCALES = {
    Locale.EN_GB: "GB", Locale.EN: "US", Locale.DE: "DE", Locale.FR: "FR", Locale.ES: "ES",
    Locale.IT: "IT", Locale.NL: "NL", Locale.EN_CA: "CA", Locale.DE_AT: "AT",
}
PEOPLE = {locale: Person(locale, seed=SEED + i) for i, locale in enumerate(PHONE_LOCALES)}


def luhn_ok(digits):
    total = 0
    for i, d in enumerate(reversed(digits)):
        x = int(d)
        if i % 2 == 1:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return total % 10 == 0


def random_valid_number(region):
    """A number libphonenumber calls valid for `region`: mimesis's number for the locale when it
    is valid, else random digits in the region's national layout until one is."""
    locale = next(l for l, r in PHONE_LOCALES.items() if r == region)
    for _ in range(200):
        raw = PEOPLE[locale].telephone()
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == region:
            return number
    for _ in range(20000):
        example = phonenumbers.example_number_for_type(region, rng.choice(
            [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]))
        national = str(example.national_number)
        keep = rng.randint(1, 3)
        digits = national[:keep] + "".join(rng.choice(string.digits) for _ in national[keep:])
        number = phonenumbers.parse("+" + str(example.country_code) + digits)
        if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == region:
            return number
    raise RuntimeError(region)


PHONE_CUES = ["call me on", "Tel:", "phone", "mobile:", "ring me at", "Mob.", "cell", "text me on",
              "Telefon:", "Tel.", "telefono", "whatsapp", "contact number", "Handy:", "fax"]


def phone_layouts(number, region):
    """(layout name, text, needs a context word) for one valid number."""
    intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    nsn = str(number.national_number)
    cc = str(number.country_code)
    bare_national = "".join(c for c in national if c.isdigit())
    out = [
        ("national", national, False),
        ("international", intl, False),
        ("e164", e164, False),
        ("00 prefix", "00 " + intl[1:], False),
        ("00 prefix, compact", "00" + e164[1:], False),
        ("dashes", "+" + cc + "-" + "-".join(intl.split(" ")[1:]), False),
        ("bare national after a cue", bare_national, True),
    ]
    if region in ("US", "CA"):
        area, exchange, line = nsn[:3], nsn[3:6], nsn[6:]
        out += [
            ("brackets, no space", f"({area}){exchange}-{line}", False),
            ("dots", f"{area}.{exchange}.{line}", False),
            ("1- prefix", f"1-{area}-{exchange}-{line}", False),
            ("001 prefix", f"001-{area}-{exchange}-{line}", False),
        ]
    else:
        out.append(("011 prefix", "011 " + intl[1:], False))
        if national.startswith("0") and " " in national:
            head, _, rest = national.partition(" ")
            out += [
                ("area code in brackets", f"({head}) {rest}", False),
                ("area code in brackets, compact", f"({head}){rest.replace(' ', '')}", False),
            ]
    return out


def phone():
    region = rng.choice(list(PHONE_LOCALES.values()))
    number = random_valid_number(region)
    name, value, needs_cue = rng.choice(phone_layouts(number, region))
    return value, needs_cue


def card():
    kind = rng.choice([CardType.VISA, CardType.MASTER_CARD, CardType.AMERICAN_EXPRESS])
    while True:
        value = payment.credit_card_number(kind)
        digits = value.replace(" ", "")
        if luhn_ok(digits):
            break
    layout = rng.choice(["spaces", "compact", "dashes"])
    if layout == "compact":
        return digits
    if layout == "dashes":
        return value.replace(" ", "-")
    return value


IBAN_COUNTRIES = ["GB", "DE", "FR", "ES", "IT", "NL", "IE", "BE", "PL", "PT", "AT", "CH", "SE", "DK", "FI"]


def iban():
    value = IBAN.random(country_code=rng.choice(IBAN_COUNTRIES), random=rng)
    return value.formatted if rng.random() < 0.6 else str(value)


def ssn():
    while True:
        area, group, serial = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
        if area != 666:
            break
    layout = rng.choice(["dashes", "dashes", "spaces"])
    sep = "-" if layout == "dashes" else " "
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]


def nino():
    while True:
        prefix = rng.choice(NINO_FIRST) + rng.choice(NINO_SECOND)
        if prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            break
    d = "".join(rng.choice(string.digits) for _ in range(6))
    suffix = rng.choice("ABCD")
    return rng.choice([
        f"{prefix}{d}{suffix}", f"{prefix} {d[:2]} {d[2:4]} {d[4:]} {suffix}", f"{prefix} {d} {suffix}",
    ])


def ip():
    if rng.random() < 0.6:
        return internet.ip_v4()
    address = ipaddress.IPv6Address(internet.ip_v6())
    return str(address)


def email():
    return rng.choice([person_en.email, lambda: person_en.email(domains=["corp.example.org", "mail.co.uk", "uni.ac.uk"])])()


def aws_key_id():
    return rng.choice(["AKIA", "ASIA"]) + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))


def aws_secret():
    alphabet = string.ascii_letters + string.digits + "/+"
    while True:
        secret = "".join(rng.choice(alphabet) for _ in range(40))
        if any(c.islower() for c in secret) and any(c.isupper() for c in secret) and any(c.isdigit() for c in secret):
            return secret


def pem():
    body = "\n".join("".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(64)) for _ in range(rng.randint(2, 6)))
    kind = rng.choice(["", "ENCRYPTED ", "DSA ", "EC ", "RSA "])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


TEMPLATES = [
    "{filler} Reach out via {} if anything changes.",
    "Note from the call: {} -- confirm with the customer tomorrow.",
    "| name | value |\n|---|---|\n| contact | {} |",
    "Bitte an {} schicken, danke.",
    "Merci de verifier {} avant lundi.",
    "Por favor, revisa {} y avisame.",
    "{{\"customer\": {{\"ref\": \"{}\"}}}}",
    "- item: {}\n- status: pending",
    "> {}\n\nThat is what they sent us.",
    "{filler} ({}) {filler}",
]
CUE_TEMPLATES = [
    "{cue} {}",
    "You can {cue} {} after six.",
    "{filler} {cue} {} {filler}",
    "Kontakt -- {cue} {}",
]


def filler():
    return text_en.sentence()


def render(template, value, **extra):
    # Fill the named parts first, then find where the value goes.
    marker = "\x00"
    text = template.replace("{filler}", "\x01").replace("{cue}", "\x02")
    text = text.replace("{{", "\x03").replace("}}", "\x04").replace("{}", marker)
    parts = []
    for c in text:
        if c == "\x01":
            parts.append(filler())
        elif c == "\x02":
            parts.append(extra.get("cue", ""))
        elif c == "\x03":
            parts.append("{")
        elif c == "\x04":
            parts.append("}")
        else:
            parts.append(c)
    text = "".join(parts)
    start = text.index(marker)
    return text.replace(marker, value), start


def positive(entity, value, needs_cue=False):
    if needs_cue:
        template = rng.choice(CUE_TEMPLATES)
        text, start = render(template, value, cue=rng.choice(PHONE_CUES))
    else:
        template = rng.choice(TEMPLATES)
        if entity == "AWS_ACCESS_KEY" or entity == "PRIVATE_KEY":
            template = rng.choice(["{}", "export KEY='{}'", "{filler}\n{}\n{filler}"])
        text, start = render(template, value)
    return {"text": text, "spans": [{"start": start, "end": start + len(value), "entity": entity}]}


def aws_pair():
    key_id, secret = aws_key_id(), aws_secret()
    text = rng.choice([
        f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}\n",
        f'{{"AccessKeyId": "{key_id}", "SecretAccessKey": "{secret}"}}',
        f"aws configure set aws_access_key_id {key_id} && aws configure set aws_secret_access_key {secret}",
    ])
    a, b = text.index(key_id), text.index(secret)
    return {"text": text, "spans": [
        {"start": a, "end": a + len(key_id), "entity": "AWS_ACCESS_KEY"},
        {"start": b, "end": b + len(secret), "entity": "AWS_ACCESS_KEY"},
    ]}


# ---------------------------------------------------------------- hard negatives


def luhn_failing_16():
    while True:
        digits = rng.choice("3456") + "".join(rng.choice(string.digits) for _ in range(15))
        if not luhn_ok(digits):
            break
    return rng.choice([digits, " ".join(digits[i:i + 4] for i in range(0, 16, 4))])


def price():
    amount = rng.uniform(1, 2_000_000)
    return rng.choice([
        f"${amount:,.2f}", f"EUR {amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", "."),
        f"{amount:,.0f} GBP", f"{int(amount):,} yen".replace(",", " "),
    ])


def tracking():
    return rng.choice([
        "1Z" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        " ".join("".join(rng.choice(string.digits) for _ in range(4)) for _ in range(5)) + " " + "".join(rng.choice(string.digits) for _ in range(2)),
        "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) + "".join(rng.choice(string.digits) for _ in range(9)) + "GB",
        "".join(rng.choice(string.digits) for _ in range(12)),
    ])


def timestamp():
    moment = dates.datetime(start=2000, end=2030)
    return rng.choice([
        moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S"), moment.strftime("%d.%m.%Y %H:%M"),
        moment.strftime("%d/%m/%Y"), moment.strftime("%m-%d-%Y"), moment.strftime("%Y%m%d%H%M%S"),
        str(int(moment.timestamp())), str(int(moment.timestamp() * 1000)),
        moment.strftime("%a, %d %b %Y %H:%M:%S +0000"),
    ])


def version():
    # As software writes them: semver, or four parts with a build number (10.0.19045.3803).
    # Four small parts (9.18.30.9) are an IPv4 address as much as a version: not a hard negative.
    if rng.random() < 0.7:
        parts = [str(rng.randint(0, 30)) for _ in range(rng.randint(2, 3))]
    else:
        parts = [str(rng.randint(0, 30)), str(rng.randint(0, 9)), str(rng.randint(1000, 30000)), str(rng.randint(0, 9999))]
    return rng.choice(["v", "", "release-"]) + ".".join(parts)


def order_number():
    n = "".join(rng.choice(string.digits) for _ in range(rng.randint(6, 12)))
    return rng.choice([f"ORD-{n}", f"#{n}", f"INV-{rng.randint(2019, 2030)}-{n[:6]}", f"PO {n}", f"order {n}", f"SO{n}"])


def bare_id():
    return "".join(rng.choice(string.digits) for _ in range(rng.choice([9, 10, 11])))


NEGATIVE_MAKERS = [
    lambda: str(uuid.UUID(int=rng.getrandbits(128))),
    lambda: hashlib.md5(str(rng.random()).encode()).hexdigest(),
    lambda: hashlib.sha1(str(rng.random()).encode()).hexdigest(),
    lambda: hashlib.sha256(str(rng.random()).encode()).hexdigest(),
    timestamp, timestamp, version, order_number, order_number, luhn_failing_16, luhn_failing_16,
    price, tracking, tracking,
    lambda: code.isbn(), lambda: code.issn(), lambda: code.ean(), lambda: code.imei(),
    lambda: f"{rng.uniform(-90, 90):.5f}, {rng.uniform(-180, 180):.5f}",
    lambda: f"{rng.randint(100, 999)} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
    bare_id, bare_id,
    lambda: f"{rng.randint(1, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}.{rng.randint(0, 99999)}",
    lambda: f"{rng.randint(1000, 99999):,} bytes",
    lambda: f"{rng.randint(10, 99)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}",
]
NEGATIVE_TEMPLATES = [
    "Ticket {} was closed by the on-call engineer.",
    "The log line reads: {} INFO request served.",
    "Reference {}; nothing else is needed.",
    "Build {} passed all checks.",
    "{}",
    "Shipped under {}, see the dashboard.",
    "| id | value |\n|---|---|\n| {} | ok |",
    "{{\"id\": \"{}\", \"status\": \"done\"}}",
    "Der Auftrag {} ist abgeschlossen.",
    "La commande {} est partie.",
]


def negative():
    value = rng.choice(NEGATIVE_MAKERS)()
    text, _ = render(rng.choice(NEGATIVE_TEMPLATES), value)
    return {"text": text, "spans": []}


def main():
    records = []
    makers = {
        "EMAIL_ADDRESS": email, "CREDIT_CARD": card, "IBAN_CODE": iban, "US_SSN": ssn,
        "UK_NINO": nino, "IP_ADDRESS": ip, "AWS_ACCESS_KEY": aws_key_id, "PRIVATE_KEY": pem,
    }
    for entity, make in makers.items():
        records.extend(positive(entity, make()) for _ in range(250))
    for _ in range(600):
        value, needs_cue = phone()
        records.append(positive("PHONE_NUMBER", value, needs_cue))
    records.extend(aws_pair() for _ in range(50))
    records.extend(negative() for _ in range(1500))
    rng.shuffle(records)
    out = Path(os.environ.get("HELDOUT_OUT", Path(__file__).with_name("heldout.jsonl")))
    with out.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    spans = sum(len(r["spans"]) for r in records)
    negatives = sum(1 for r in records if not r["spans"])
    print(f"{len(records)} texts, {spans} positive spans, {negatives} hard negatives -> {out}")


if __name__ == "__main__":
    main()
