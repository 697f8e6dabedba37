//! `trackfs::protocol::crypto::apply_keystream` against an implementation we did not write:
//! `openssl enc -aes-128-ctr`, at random keys, offsets and lengths (unaligned ones included).
//!
//! For a byte offset `o`, openssl starts at the counter block `IV + o/16` (128-bit big-endian
//! addition) and its output is compared from `o % 16` on, exactly as docs/protocol.md defines it.

#[path = "common/origin_fixture.rs"]
mod fixture;

use rand::{Rng, RngCore, SeedableRng};
use std::io::Write;
use std::process::{Command, Stdio};
use trackfs::protocol::crypto::{apply_keystream, AudioKey, AUDIO_IV};

/// The counter block for byte offset `offset`.
fn counter_block(offset: u64) -> [u8; 16] {
    let iv = u128::from_be_bytes(AUDIO_IV);
    iv.wrapping_add(u128::from(offset / 16)).to_be_bytes()
}

/// Encrypts `plain` (which starts `offset % 16` bytes into its block) with openssl.
fn openssl_ctr(key: &[u8; 16], offset: u64, plain: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["enc", "-aes-128-ctr", "-nosalt", "-K"])
        .arg(hex::encode(key))
        .arg("-iv")
        .arg(hex::encode(counter_block(offset)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    let mut stdin = child.stdin.take().unwrap();
    let input = plain.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "openssl failed");
    output.stdout
}

/// Checks `len` bytes at `offset` under `key` against openssl.
fn check(key: [u8; 16], offset: u64, len: usize, rng: &mut impl RngCore) {
    let skip = (offset % 16) as usize;
    let mut padded = vec![0u8; skip + len];
    rng.fill_bytes(&mut padded);
    let expected = openssl_ctr(&key, offset, &padded);
    let mut ours = padded[skip..].to_vec();
    apply_keystream(&AudioKey(key), offset, &mut ours);
    assert!(
        ours[..] == expected[skip..],
        "offset {offset} len {len} key {}",
        hex::encode(key)
    );
}

#[test]
fn keystream_matches_openssl_at_random_offsets_and_lengths() {
    if !fixture::have_tool("openssl", "version") {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7261636b);
    let fixed: [(u64, usize); 10] = [
        (0, 0),
        (0, 1),
        (0, 16),
        (1, 15),
        (15, 2),
        (16, 33),
        (167, 4096),
        (65_535, 3),
        (131_071, 70_000),
        (u64::MAX - 40, 40),
    ];
    for (offset, len) in fixed {
        check(rng.gen(), offset, len, &mut rng);
    }
    for _ in 0..150 {
        let offset = match rng.gen_range(0..3) {
            0 => rng.gen_range(0..64),
            1 => rng.gen_range(0..1 << 24),
            _ => rng.gen_range(0..1u64 << 62),
        };
        let len = rng.gen_range(1..20_000);
        check(rng.gen(), offset, len, &mut rng);
    }
}
