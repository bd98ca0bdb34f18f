//! Little-endian encoding helpers. [`Reader`] checks every length against the bytes that
//! are actually there before slicing, so untrusted input can never cause a panic or an
//! allocation larger than the input itself.

use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }
    /// Append one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Append a u16, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a u32, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a u64, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append an i64, little-endian two's complement.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append an id (32 bytes).
    pub fn id(&mut self, id: &BlobId) {
        self.buf.extend_from_slice(&id.0);
    }
    /// Append raw bytes without a length.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from untrusted bytes, naming `object` in every error.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    object: &'a str,
}

impl<'a> Reader<'a> {
    /// Start reading `buf`; `object` names it in errors.
    pub fn new(buf: &'a [u8], object: &'a str) -> Self {
        Reader {
            buf,
            pos: 0,
            object,
        }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A [`Error::Corrupt`] naming this reader's object.
    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.object, reason)
    }

    /// Take the next `n` bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if fewer than `n` bytes remain.
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.corrupt(format!(
                "{field} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Read one byte.
    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    /// Read a little-endian u16.
    pub fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    /// Read a little-endian u32.
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    /// Read a little-endian u64.
    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// Read a little-endian i64.
    pub fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }
    /// Read a 32-byte id.
    pub fn id(&mut self, field: &str) -> Result<BlobId> {
        Ok(BlobId(self.array::<ID_LEN>(field)?))
    }

    /// Read a u32 element count and check that `count * min_element_size` bytes can
    /// still follow, so callers may allocate `count` elements safely.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the count cannot fit in the remaining bytes.
    pub fn count(&mut self, field: &str, min_element_size: usize) -> Result<usize> {
        let count = self.u32(field)? as usize;
        let need = count.saturating_mul(min_element_size.max(1));
        if need > self.remaining() {
            return Err(self.corrupt(format!(
                "{field} is {count} but only {} bytes remain for its elements",
                self.remaining()
            )));
        }
        Ok(count)
    }

    /// Fail unless every byte was consumed.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the number of trailing bytes.
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.corrupt(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_short_input_instead_of_panicking() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert!(r.u32("field").is_err());
        let mut r = Reader::new(&[255, 255, 255, 255], "test");
        assert!(r.count("count", 32).is_err());
    }

    #[test]
    fn writer_and_reader_agree() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0x1234);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.i64(-5);
        w.id(&BlobId([9; 32]));
        let bytes = w.finish();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 0x1234);
        assert_eq!(r.u32("c").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("d").unwrap(), u64::MAX - 1);
        assert_eq!(r.i64("e").unwrap(), -5);
        assert_eq!(r.id("f").unwrap(), BlobId([9; 32]));
        r.finish().unwrap();
    }
}
