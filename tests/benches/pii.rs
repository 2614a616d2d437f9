//! PII guard throughput, single-threaded, in MB/s (BENCHMARKS.md).
//!
//! Run: `cargo bench -p llmlite-tests --bench pii`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::hint::black_box;
use std::time::Instant;

use std::sync::Arc;

use llmlite::pii::{OutputGuard, Policy, Scanner};

/// About `bytes` of ordinary English prose, made of common words and punctuation: what most
/// prompts are.
fn clean_prose(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "should",
        "summarise",
        "this",
        "paragraph",
        "about",
        "quarterly",
        "results",
        "and",
        "explain",
        "why",
        "revenue",
        "grew",
        "in",
        "the",
        "northern",
        "region",
        "while",
        "costs",
        "fell",
        "please",
        "write",
        "a",
        "short",
        "function",
        "that",
        "parses",
        "input",
        "returns",
        "error",
        "when",
        "value",
        "is",
        "missing",
        "consider",
        "edge",
        "cases",
        "team",
        "meeting",
        "notes",
        "follow",
        "up",
        "next",
        "week",
        "with",
        "design",
        "review",
        "draft",
    ];
    let mut text = String::with_capacity(bytes + 64);
    let mut n = 0usize;
    while text.len() < bytes {
        text.push_str(WORDS[(n * 7 + n / 13) % WORDS.len()]);
        n += 1;
        text.push_str(if n.is_multiple_of(17) {
            ". "
        } else if n.is_multiple_of(29) {
            ",\n"
        } else {
            " "
        });
    }
    text
}

/// About `bytes` of prose made by cycling `sentences`: for scripts other than Latin, where every
/// character is several bytes and words carry no ASCII boundaries.
fn prose_from(sentences: &[&str], bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 256);
    for (n, sentence) in sentences.iter().cycle().enumerate() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(sentence);
        text.push_str(if n % 5 == 4 { "\n" } else { " " });
    }
    text
}

/// Chinese and Japanese prose, with the dates and figures such text carries (no PII).
const CJK: &[&str] = &[
    "请总结这段关于季度业绩的文字，并解释为什么北方地区的收入增长而成本下降。",
    "会议纪要：下周与设计团队一起跟进评审草案，2024年第3季度的目标不变。",
    "请编写一个简短的函数，用于解析输入，并在缺少值时返回错误。",
    "注意边界情况：空字符串、超长输入以及重复的键。",
    "この段落を要約し、売上が12%伸びた理由を説明してください。",
    "来週の打ち合わせでは、設計レビューの下書きについて話し合います。",
    "入力を解析して、値がない場合はエラーを返す短い関数を書いてください。",
];

/// Hindi prose in Devanagari, with Devanagari digits as Hindi text writes them (no PII).
const DEVANAGARI: &[&str] = &[
    "कृपया तिमाही परिणामों के बारे में इस अनुच्छेद का सारांश दें और बताएं कि उत्तरी क्षेत्र में राजस्व क्यों बढ़ा।",
    "बैठक के नोट्स: अगले सप्ताह डिज़ाइन टीम के साथ समीक्षा मसौदे पर चर्चा होगी।",
    "एक छोटा फ़ंक्शन लिखें जो इनपुट को पार्स करे और मान न होने पर त्रुटि लौटाए।",
    "वर्ष २०२४ की तीसरी तिमाही में लागत १२ प्रतिशत घटी, जबकि बिक्री ८ प्रतिशत बढ़ी।",
    "सीमा स्थितियों पर ध्यान दें: खाली स्ट्रिंग, बहुत लंबा इनपुट और दोहराई गई कुंजियाँ।",
];

/// A labelled corpus's texts (`corpus.jsonl`, `heldout.jsonl`), repeated: several findings in
/// every line.
fn pii_dense(file: &str, bytes: usize) -> String {
    let path = format!("{}/pii/{file}", env!("CARGO_MANIFEST_DIR"));
    let corpus = std::fs::read_to_string(path).unwrap();
    let texts: Vec<String> = corpus
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut text = String::with_capacity(bytes + 1024);
    for t in texts.iter().cycle() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(t);
        text.push('\n');
    }
    text
}

fn throughput(scanner: &Scanner, text: &str, rounds: usize) -> (f64, usize) {
    let mut findings = 0;
    black_box(scanner.scan(text));
    let start = Instant::now();
    for _ in 0..rounds {
        findings = black_box(scanner.scan(black_box(text))).len();
    }
    let seconds = start.elapsed().as_secs_f64();
    (
        (text.len() * rounds) as f64 / seconds / 1_000_000.0,
        findings,
    )
}

/// An answer streamed through the answers' guard in deltas of `delta` bytes (as a model streams
/// words), every entity masked: MB/s of answer text.
fn streamed(scanner: &Arc<Scanner>, text: &str, delta: usize, rounds: usize) -> f64 {
    let policy = Policy::parse(
        &serde_json::json!({"*": "MASK", "output": true}),
        scanner.entity_names(),
    )
    .unwrap();
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + delta).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(&text[at..end]);
        at = end;
    }
    let start = Instant::now();
    for _ in 0..rounds {
        let mut guard = OutputGuard::new(scanner, policy.clone()).unwrap();
        let mut sent = 0;
        for piece in &pieces {
            sent += black_box(guard.push(0, piece)).len();
        }
        sent += guard.flush(0).len();
        black_box(sent);
    }
    (text.len() * rounds) as f64 / start.elapsed().as_secs_f64() / 1_000_000.0
}

fn main() {
    let scanner = Arc::new(Scanner::new(&[]).unwrap());
    let clean = clean_prose(8 * 1024 * 1024);
    let dense = pii_dense("corpus.jsonl", 2 * 1024 * 1024);
    let held_out = pii_dense("heldout.jsonl", 2 * 1024 * 1024);
    // Per-prompt sizes matter too: the guard scans each message on its own.
    let prompt = clean_prose(4 * 1024);
    let cjk = prose_from(CJK, 8 * 1024 * 1024);
    let devanagari = prose_from(DEVANAGARI, 8 * 1024 * 1024);
    let (clean_mbps, clean_findings) = throughput(&scanner, &clean, 10);
    let (dense_mbps, dense_findings) = throughput(&scanner, &dense, 5);
    let (held_out_mbps, held_out_findings) = throughput(&scanner, &held_out, 5);
    let answer = clean_prose(1024 * 1024);
    let streamed_clean = streamed(&scanner, &answer, 16, 3);
    let streamed_dense = streamed(&scanner, &dense[..512 * 1024], 16, 1);
    let (prompt_mbps, _) = throughput(&scanner, &prompt, 20_000);
    let (cjk_mbps, cjk_findings) = throughput(&scanner, &cjk, 3);
    let (devanagari_mbps, devanagari_findings) = throughput(&scanner, &devanagari, 3);
    println!("\n## PII guard throughput (single thread)\n");
    println!("| text | size | findings | MB/s |\n|---|---|---|---|");
    println!(
        "| clean prose | {:.1} MB | {clean_findings} | {clean_mbps:.0} |",
        clean.len() as f64 / 1e6
    );
    println!("| clean prose, one 4 KiB prompt at a time | 4 KiB | 0 | {prompt_mbps:.0} |");
    println!(
        "| PII-dense (the corpus, repeated) | {:.1} MB | {dense_findings} | {dense_mbps:.0} |",
        dense.len() as f64 / 1e6
    );
    println!(
        "| PII-dense, held-out corpus repeated (phone-heavy) | {:.1} MB | {held_out_findings} | {held_out_mbps:.0} |",
        held_out.len() as f64 / 1e6
    );
    println!(
        "| Chinese and Japanese prose | {:.1} MB | {cjk_findings} | {cjk_mbps:.0} |",
        cjk.len() as f64 / 1e6
    );
    println!(
        "| Hindi prose (Devanagari, with Devanagari digits) | {:.1} MB | {devanagari_findings} | {devanagari_mbps:.0} |",
        devanagari.len() as f64 / 1e6
    );
    println!("\n## Answers streamed through the output guard, 16-byte deltas\n");
    println!("| answer | MB/s |\n|---|---|");
    println!("| clean prose, 1 MB | {streamed_clean:.1} |");
    println!("| PII-dense (tuning corpus), 0.5 MB | {streamed_dense:.1} |");
}
