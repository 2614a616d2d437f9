"""Writes corpus.jsonl: labelled text for the PII guard's precision and recall test.

Each line is {"text": ..., "spans": [{"start", "end", "entity"}]} with character offsets
(the text is ASCII, so characters are bytes). Positives come from Faker (seeded, so the output
is reproducible); hard negatives are written by hand below. Rerun with
    pip install faker && python3 tests/pii/generate_corpus.py
and commit both this script and its output.
"""

import ipaddress
import json
import random
import string
from pathlib import Path

from faker import Faker

SEED = 20261129
PER_ENTITY = 300
random.seed(SEED)
Faker.seed(SEED)
fake_us = Faker("en_US")
fake_gb = Faker("en_GB")
fake_ibans = [Faker(locale) for locale in ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "pl_PL", "sv_SE")]


def group(digits, sizes, sep):
    out, at = [], 0
    for size in sizes:
        if at >= len(digits):
            break
        out.append(digits[at:at + size])
        at += size
    if at < len(digits):
        out.append(digits[at:])
    return sep.join(out)


def card():
    kind = random.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "visa16", "mastercard"])
    number = fake_us.credit_card_number(card_type=kind)
    sep = random.choice(["", " ", "-", " "])
    if not sep:
        return number
    sizes = [4, 6, 5] if len(number) == 15 else [4, 4, 4, 4, 3]
    return group(number, sizes, sep)


def iban():
    value = random.choice(fake_ibans).iban()
    return group(value, [4] * 9, " ") if random.random() < 0.5 else value


NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]


def nino():
    while True:
        prefix = random.choice(NINO_FIRST) + random.choice(NINO_SECOND)
        if prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            break
    digits = "".join(random.choice(string.digits) for _ in range(6))
    suffix = random.choice("ABCD")
    if random.random() < 0.5:
        return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
    return f"{prefix}{digits}{suffix}"


def ip():
    if random.random() < 0.6:
        return fake_us.ipv4()
    address = ipaddress.IPv6Address(fake_us.ipv6())
    return str(address) if random.random() < 0.5 else address.exploded


def aws_key_id():
    return random.choice(["AKIA", "ASIA"]) + "".join(random.choice(string.ascii_uppercase + "234567") for _ in range(16))


def aws_secret():
    alphabet = string.ascii_letters + string.digits + "/+"
    while True:
        secret = "".join(random.choice(alphabet) for _ in range(40))
        if any(c.islower() for c in secret) and any(c.isupper() for c in secret) and any(c.isdigit() for c in secret):
            return secret


def pem():
    body = "\n".join("".join(random.choice(string.ascii_letters + string.digits + "+/") for _ in range(64)) for _ in range(4))
    kind = random.choice(["", "RSA ", "EC ", "OPENSSH "])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


def phone():
    return random.choice([
        lambda: "+44 20 " + fake_gb.numerify("#### ####"),
        lambda: "+44 7" + fake_gb.numerify("### ######"),
        lambda: "020 " + fake_gb.numerify("#### ####"),
        lambda: "07" + fake_gb.numerify("### ######"),
        lambda: f"({random.randint(2, 9)}{random.randint(0, 8)}{random.randint(0, 9)}) {random.randint(2, 9)}{fake_us.numerify('##')}-{fake_us.numerify('####')}",
        lambda: f"{random.randint(2, 9)}{random.randint(0, 8)}{random.randint(0, 9)}-{random.randint(2, 9)}{fake_us.numerify('##')}-{fake_us.numerify('####')}",
        lambda: "+1 " + f"{random.randint(2, 9)}{fake_us.numerify('##')} {random.randint(2, 9)}{fake_us.numerify('##')} {fake_us.numerify('####')}",
    ])()


GENERATORS = {
    "EMAIL_ADDRESS": lambda: random.choice([fake_us.email, fake_gb.company_email, fake_us.free_email])(),
    "PHONE_NUMBER": phone,
    "CREDIT_CARD": card,
    "IBAN_CODE": iban,
    "US_SSN": lambda: fake_us.ssn(),
    "UK_NINO": nino,
    "IP_ADDRESS": ip,
    "AWS_ACCESS_KEY": aws_key_id,
    "PRIVATE_KEY": pem,
}

TEMPLATES = [
    "Please send the details to {} before Friday.",
    "My {} is on file, can you check it?",
    "Customer record: {} (verified by phone).",
    "Hi team,\nthe value is {}\nthanks!",
    "Error while processing {}: retry later.",
    "{}",
    "Can you summarise this ticket? Reporter wrote: 'use {} for the refund'.",
]
LABELS = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone number", "CREDIT_CARD": "card number",
    "IBAN_CODE": "IBAN", "US_SSN": "SSN", "UK_NINO": "National Insurance number",
    "IP_ADDRESS": "server address", "AWS_ACCESS_KEY": "access key", "PRIVATE_KEY": "key",
}


def positive(entity):
    value = GENERATORS[entity]()
    template = random.choice(TEMPLATES)
    prefix, suffix = template.split("{}")
    prefix = f"{LABELS[entity]}: " if template == "{}" else prefix
    text = prefix + value + suffix
    return {"text": text, "spans": [{"start": len(prefix), "end": len(prefix) + len(value), "entity": entity}]}


def aws_pair():
    key_id, secret = aws_key_id(), aws_secret()
    text = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    a = text.index(key_id)
    b = text.index(secret)
    return {"text": text, "spans": [
        {"start": a, "end": a + len(key_id), "entity": "AWS_ACCESS_KEY"},
        {"start": b, "end": b + len(secret), "entity": "AWS_ACCESS_KEY"},
    ]}


def mixed():
    email, card_value, phone_value = GENERATORS["EMAIL_ADDRESS"](), card(), phone()
    text = f"Contact {email} or call {phone_value}; charge card {card_value} for the order."
    spans = []
    for value, entity in ((email, "EMAIL_ADDRESS"), (phone_value, "PHONE_NUMBER"), (card_value, "CREDIT_CARD")):
        start = text.index(value)
        spans.append({"start": start, "end": start + len(value), "entity": entity})
    return {"text": text, "spans": spans}


HARD_NEGATIVES = [
    "Order #4539-1488-0343 shipped on 2026-11-29T03:55:37Z.",
    "Order number 100234987 was refunded; invoice INV-2026-0001234.",
    "The build ran at 12:30:45 and took 00:01:23.",
    "Trace id 3f2b8c1e-9a4d-4c5e-8b7f-1a2b3c4d5e6f failed.",
    "Upgrade from v1.2.3 to 1.2.3.4.5 requires a restart.",
    "commit 1f3a9c0b2d4e6f8091a2b3c4d5e6f708192a3b4c (HEAD -> main)",
    "Merged 9fceb02d0ae598e95dc970b74767f19372d61af8 into release.",
    "Use the test card 4242 4242 4242 4242 in the Stripe sandbox.",
    "The docs suggest 4111 1111 1111 1111 for testing Visa payments.",
    "Try 5555 5555 5555 4444 (a Mastercard test number) with any CVC.",
    "Amex test number 378282246310005 always succeeds.",
    "The number 4539 1488 0343 6468 fails the Luhn check.",
    "1234 5678 9012 3456 is just a placeholder.",
    "IBAN GB82 WEST 1234 5698 7654 33 has a wrong checksum.",
    "DE89 3704 0044 0532 0130 01 is missing a digit.",
    "ISBN 978-3-16-148410-0 and ISSN 0317-8471.",
    "Part number 123-45-6789 is the example from the manual.",
    "Area 000-12-3456 and 666-12-3456 are never issued.",
    "The SSN format is XXX-XX-XXXX.",
    "Postcode SW1A 1AA and the reference QQ 12 34 56 C from the HMRC examples.",
    "Reference AB1234 and batch CD-12-34.",
    "let x = arr[1234567890123]; // not a card",
    "for (i = 0; i < 4096; i++) { buf[i] = 255; }",
    "SELECT * FROM orders WHERE id = 4539148803436467;",
    "The ratio was 3.14159265358979 and e is 2.71828182845904.",
    "Latency p99: 12.345 ms; throughput 1234567 req/s.",
    "The MAC address 00:1a:2b:3c:4d:5e belongs to the printer.",
    "Version 10.0.19045.3803 of the OS.",
    "Dates: 2026/11/29, 29.11.2026, 11-29-2026.",
    "Coordinates 51.5074, -0.1278 point at London.",
    "The SHA-256 is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.",
    "Tracking code 1Z999AA10123456784 from the courier.",
    "Call extension 4021 or room 3.14.",
    "Account ID 123456789012 in the AWS console.",
    "The base64 blob aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBzZWNyZXQ= is harmless.",
    "Ports 8080, 5432 and 6379 are open.",
    "0.0.0.0 is not routable; 999.1.2.3 is not an address.",
    "Use `cargo build --release` then `./target/release/llmlite`.",
    "Meeting ID 845 2236 9914, passcode 55621.",
    "Phone numbers look like +XX XXX XXX XXXX in the template.",
    "The year 1999 and the number 2000-2001 season.",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "The certificate -----BEGIN CERTIFICATE----- block is public.",
    "HTTP 404 at 10:42 on build 2026.11.29.1.",
    "user@localhost is not a real mailbox and neither is @handle.",
    "Sum: 4929 1234 5678 9012 + tax.",
]


def main():
    records = []
    for entity in GENERATORS:
        records.extend(positive(entity) for _ in range(PER_ENTITY))
    records.extend(aws_pair() for _ in range(50))
    records.extend(mixed() for _ in range(100))
    records.extend({"text": text, "spans": []} for text in HARD_NEGATIVES)
    random.shuffle(records)
    out = Path(__file__).with_name("corpus.jsonl")
    with out.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=True) + "\n")
    spans = sum(len(r["spans"]) for r in records)
    print(f"{len(records)} texts, {spans} positive spans, {len(HARD_NEGATIVES)} hard negatives -> {out}")


if __name__ == "__main__":
    main()
