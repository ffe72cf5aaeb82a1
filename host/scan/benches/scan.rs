//! The echoed-token scan: its throughput on a 10 MiB body streamed in 64 KiB
//! chunks (without the token, and with it every MiB) beside memcpy of the
//! same bytes, for typical JSON, random bytes of the patterns' alphabet, and
//! the token's text repeated without its last byte; and what it adds to one brokered call with a 4 KiB JSON
//! answer (the cached automaton, ten headers, the body) beside the copy the
//! unscanned path makes anyway.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use airlock_scan::{Redactor, RedactorCache, StreamRedactor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const AUTHZ: &str = "Bearer ya29.a0AfB_byC+x/9kQ3mZ7Lr0pW2vN8sT4uY6hJ1eD5fG==";
const CHUNK: usize = 64 * 1024;
/// Typical API JSON: the prefilter skips most of it.
const JSON: &[u8] = b"{\"id\":12345,\"title\":\"an issue\",\"labels\":[\"bug\"]} abcdefgh";
/// Every byte a pattern holds (base64 content, say): the worst case.
const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-.%\\\" {}:,[]";

fn body(alphabet: &[u8], len: usize, every: Option<usize>) -> Vec<u8> {
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize]
        })
        .collect();
    if let Some(every) = every {
        let token = AUTHZ.as_bytes();
        for at in (every / 2..len - token.len()).step_by(every) {
            out[at..at + token.len()].copy_from_slice(token);
        }
    }
    out
}

fn stream(redactor: &Arc<Redactor>, src: &bytes::Bytes) -> usize {
    let mut s = StreamRedactor::new(redactor.clone());
    let mut out = 0;
    for at in (0..src.len()).step_by(CHUNK) {
        let (ready, found) = s.push(src.slice(at..(at + CHUNK).min(src.len())));
        out += ready[0].len() + ready[1].len() + found.total() as usize;
    }
    out + s.finish().len()
}

fn bench(c: &mut Criterion) {
    let redactor = Arc::new(Redactor::new(&[AUTHZ.as_bytes()]));
    // The token's own text cut short, over and over: every anchor, and never a
    // whole pattern (an upstream that knows the token and wants the scan slow).
    let token = AUTHZ.split_once(' ').unwrap().1.as_bytes();
    let near_misses = &token[..token.len() - 1];
    for (name, alphabet) in [
        ("json", JSON),
        ("worst_case", ALPHABET),
        ("near_misses", near_misses),
    ] {
        let clean = if name == "near_misses" {
            bytes::Bytes::from(near_misses.repeat((10 << 20) / near_misses.len()))
        } else {
            bytes::Bytes::from(body(alphabet, 10 << 20, None))
        };
        let dirty = bytes::Bytes::from(body(alphabet, 10 << 20, Some(1 << 20)));
        let mut group = c.benchmark_group(format!("scan_10mib_{name}"));
        group.throughput(Throughput::Bytes(clean.len() as u64));
        group.sample_size(20);
        group.bench_function("memcpy_64k_chunks", |b| {
            let mut dst = vec![0u8; CHUNK];
            b.iter(|| {
                for chunk in clean.chunks(CHUNK) {
                    dst[..chunk.len()].copy_from_slice(chunk);
                    black_box(&dst);
                }
            })
        });
        group.bench_function("stream_without_token", |b| {
            b.iter(|| stream(&redactor, black_box(&clean)))
        });
        group.bench_function("stream_with_token_every_mib", |b| {
            b.iter(|| stream(&redactor, black_box(&dirty)))
        });
        group.finish();
    }

    // One brokered call's answer: 4 KiB of JSON, ten headers.
    let cache = RedactorCache::default();
    cache.get(&[AUTHZ.as_bytes()]);
    let headers: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                format!("x-header-{i}"),
                format!("value-{i}-{}", "v".repeat(30)),
            )
        })
        .collect();
    for (name, alphabet) in [("json", JSON), ("worst_case", ALPHABET)] {
        let answer = bytes::Bytes::from(body(alphabet, 4 << 10, None));
        let mut group = c.benchmark_group(format!("per_call_4kib_{name}"));
        group.bench_function("unscanned_copy", |b| {
            b.iter(|| bytes::Bytes::copy_from_slice(black_box(&answer[..])))
        });
        group.bench_function("scanned", |b| {
            b.iter(|| {
                let r = cache.get(&[AUTHZ.as_bytes()]);
                let mut hits = 0;
                for (_, v) in &headers {
                    hits += usize::from(r.finds(v.as_bytes()));
                }
                let mut s = StreamRedactor::new(r);
                let (ready, _) = s.push(black_box(answer.clone()));
                (hits, ready, s.finish())
            })
        });
        group.finish();
    }
    c.bench_function("build_automaton_uncached", |b| {
        b.iter(|| Redactor::new(&[black_box(AUTHZ.as_bytes())]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
