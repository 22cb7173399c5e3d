//! A single-core ceiling for the data plane: how fast one thread seals WireGuard-sized
//! packets with ChaCha20-Poly1305 (ring, the implementation boringtun's `Tunn` uses).
//!
//! `crypto_ceiling [--seconds N] [--size BYTES]` prints `X.XX Gbit/s` (plaintext bytes
//! sealed per second) and the packet rate. `bench/throughput` reports it beside the tunnels.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

/// Packets sealed between two looks at the clock.
const CHUNK: u64 = 1024;

struct Args {
    seconds: f64,
    size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 3.0,
        size: 1400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .map_err(|e| format!("--seconds `{value}`: {e}"))?
            }
            "--size" => {
                args.size = value
                    .parse()
                    .map_err(|e| format!("--size `{value}`: {e}"))?
            }
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        return Err(format!(
            "--seconds must be in (0, 600], got {}",
            args.seconds
        ));
    }
    Ok(args)
}

fn nonce(counter: u64) -> Nonce {
    // WireGuard's nonce: four zero bytes, then the little-endian counter.
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals `size`-byte packets for `seconds`; returns (packets, elapsed).
fn run(seconds: f64, size: usize) -> Result<(u64, Duration), ring::error::Unspecified> {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32])?);
    let mut packet = vec![0x45u8; size];
    let limit = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut counter = 0u64;
    loop {
        for _ in 0..CHUNK {
            let tag = key.seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut packet)?;
            let _ = std::hint::black_box(tag);
            counter += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= limit {
            return Ok((counter, elapsed));
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crypto_ceiling: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args.seconds, args.size) {
        Ok((packets, elapsed)) => {
            let secs = elapsed.as_secs_f64();
            let gbps = packets as f64 * args.size as f64 * 8.0 / secs / 1e9;
            println!("{gbps:.2} Gbit/s");
            println!(
                "{:.0} packets/s of {} bytes, one thread, {secs:.1} s",
                packets as f64 / secs,
                args.size
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crypto_ceiling: sealing failed: {e}");
            ExitCode::FAILURE
        }
    }
}
