//! One master seed, many generators: each stream's seed is derived from the master seed,
//! the stream's name and a position (epoch), so no generator depends on another's use.

use sha2::{Digest, Sha256};

/// The generators of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// libtorch's generator while the initial weights are drawn.
    Init,
    /// libtorch's generator during an epoch (dropout).
    Torch,
    /// libtorch's generator for the Monte-Carlo dropout passes of prediction.
    McDropout,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Init => "init",
            Stream::Torch => "torch",
            Stream::McDropout => "mc_dropout",
        }
    }
}

/// The seed of `stream` at `index`: the first 8 bytes of sha256(master ‖ name ‖ index),
/// kept below 2^63 so libtorch's signed seed takes it unchanged.
pub fn derive(master: u64, stream: Stream, index: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(master.to_le_bytes());
    h.update(stream.name().as_bytes());
    h.update(index.to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) >> 1
}

/// sha256 (hex) of a value's JSON form.
pub fn sha256_json<T: serde::Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("configs serialise");
    lits_data::digest::sha256_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_epochs_differ_and_repeat() {
        let a = derive(0, Stream::Torch, 1);
        assert_eq!(a, derive(0, Stream::Torch, 1));
        assert_ne!(a, derive(0, Stream::Torch, 2));
        assert_ne!(a, derive(1, Stream::Torch, 1));
        assert_ne!(a, derive(0, Stream::Init, 1));
        assert!(a < 1 << 63);
    }
}
