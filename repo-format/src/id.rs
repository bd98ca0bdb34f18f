//! 32-byte identifiers: content ids of chunks (keyed BLAKE3 of the plaintext) and storage
//! ids of repository files (unkeyed BLAKE3 of the stored bytes).

use crate::error::{Error, Result};
use std::fmt;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// An id of a chunk, tree, chunk list, pack, index file or snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; ID_LEN]);

impl BlobId {
    /// The storage id of a repository file: unkeyed BLAKE3 of its stored bytes.
    pub fn of_stored(bytes: &[u8]) -> Self {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(ID_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// The first 8 hex characters, as shown in listings.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// Parse 64 hex characters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `s` is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != ID_LEN * 2 {
            return Err(Error::InvalidArgument(format!(
                "{s:?} is not a 64-digit hex id"
            )));
        }
        let mut out = [0u8; ID_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{s:?} is not a 64-digit hex id"
                    )))
                }
            }
        }
        Ok(BlobId(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.short())
    }
}

impl serde::Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BlobId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = BlobId(bytes);
            prop_assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        }

        #[test]
        fn from_hex_never_panics(s in ".{0,80}") {
            let _ = BlobId::from_hex(&s);
        }
    }
}
