//! Chunk size parameters: [`ChunkerParams`] and their validation ([`ParamsError`]).
//!
//! Invariant: a `ChunkerParams` that passed [`ChunkerParams::validate`] can be handed to
//! `fastcdc::v2020` without tripping any of its assertions. fastcdc checks its bounds only
//! with `debug_assert!` (a panic in debug builds, silently odd cut points in release
//! builds), and parameters are read back from repository storage, so every bound it
//! assumes is checked here first and reported as an error.

use std::fmt;

use fastcdc::v2020;

/// Content-defined chunk size parameters: the smallest, target average and largest chunk,
/// in bytes.
///
/// Together with the algorithm (FastCDC 2020, normalization level 1, unseeded gear table,
/// see the [crate docs](crate#stability-of-chunk-boundaries)) these three numbers *are*
/// the chunking definition: the same bytes chunked with the same params give the same
/// chunks forever. Whoever chunks must keep the params with the data; changing them never
/// breaks correctness, but new chunks stop deduplicating against old ones.
///
/// Build values with [`ChunkerParams::new`], or construct the struct directly and call
/// [`ChunkerParams::validate`] before use (params read from storage are untrusted).
/// [`Chunker::new`](crate::Chunker::new) validates again, so invalid params can never
/// reach fastcdc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    /// Smallest chunk in bytes. Only the final chunk of an input may be shorter.
    pub min_size: u32,
    /// Target average chunk size in bytes. Cut points are biased towards this size
    /// (normalized chunking), so most chunks land between `avg_size / 2` and `2 * avg_size`.
    pub avg_size: u32,
    /// Largest chunk in bytes; a chunk is cut here if no content-defined boundary was found
    /// earlier. Also the size of the chunker's read buffer, so it bounds memory use.
    pub max_size: u32,
}

// fastcdc's bounds as `u32`, checked at compile time to survive the conversion.
const MIN_SIZE_LOWEST: u32 = to_u32(v2020::MINIMUM_MIN);
const MIN_SIZE_HIGHEST: u32 = to_u32(v2020::MINIMUM_MAX);
const AVG_SIZE_LOWEST: u32 = to_u32(v2020::AVERAGE_MIN);
const AVG_SIZE_HIGHEST: u32 = to_u32(v2020::AVERAGE_MAX);
const MAX_SIZE_LOWEST: u32 = to_u32(v2020::MAXIMUM_MIN);
const MAX_SIZE_HIGHEST: u32 = to_u32(v2020::MAXIMUM_MAX);

const fn to_u32(value: usize) -> u32 {
    assert!(
        value <= u32::MAX as usize,
        "fastcdc bound does not fit in u32"
    );
    value as u32
}

// `u32 as usize` below is lossless on every target we build for.
const _: () = assert!(usize::BITS >= 32);

impl ChunkerParams {
    /// Params for file trees: min 128 KiB, average 512 KiB, max 2 MiB.
    ///
    /// Chosen by measurement, see `benches/NOTES.md` ("Chunk size defaults"). Each file is
    /// chunked on its own and most files are smaller than `min_size`, so in a tree the
    /// index size follows the file count; the average only matters for large files, where
    /// it sets both the index cost (about 135 MiB of in-memory index per TiB) and how much
    /// of a slightly changed file is stored again (about one to two averages per edit).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 128 * 1024,
        avg_size: 512 * 1024,
        max_size: 2 * 1024 * 1024,
    };

    /// Params for database page streams (PostgreSQL base backups, 8 KiB pages): min 4 KiB,
    /// average 16 KiB, max 64 KiB.
    ///
    /// Databases change scattered pages in place between backups, and each changed page
    /// costs about one to two chunks of new data, so chunks stay a small multiple of the
    /// page size. The price is one index entry per 16-32 KiB of data (2-4 MiB of
    /// in-memory index per GiB); see `benches/NOTES.md`, "Chunk size defaults".
    pub const SMALL: ChunkerParams = ChunkerParams {
        min_size: 4 * 1024,
        avg_size: 16 * 1024,
        max_size: 64 * 1024,
    };

    /// Builds validated params.
    ///
    /// # Errors
    ///
    /// [`ParamsError`] naming the first violated bound, as listed on
    /// [`ChunkerParams::validate`].
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self, ParamsError> {
        let params = ChunkerParams {
            min_size,
            avg_size,
            max_size,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks that fastcdc's FastCDC 2020 accepts these params.
    ///
    /// Never panics, whatever the values: use it on params read from storage.
    ///
    /// # Errors
    ///
    /// [`ParamsError`] naming the first violated condition, checked in this order:
    /// 1. `min_size` in `64..=1_048_576` (1 MiB),
    /// 2. `avg_size` in `256..=4_194_304` (4 MiB),
    /// 3. `max_size` in `1024..=16_777_216` (16 MiB),
    /// 4. all three sizes even (fastcdc scans two bytes per step),
    /// 5. `min_size <= avg_size <= max_size`.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let fail = |violation| Err(ParamsError::new(*self, violation));
        let checks = [
            (
                self.min_size,
                SizeField::Min,
                MIN_SIZE_LOWEST,
                MIN_SIZE_HIGHEST,
            ),
            (
                self.avg_size,
                SizeField::Avg,
                AVG_SIZE_LOWEST,
                AVG_SIZE_HIGHEST,
            ),
            (
                self.max_size,
                SizeField::Max,
                MAX_SIZE_LOWEST,
                MAX_SIZE_HIGHEST,
            ),
        ];
        for (value, field, lowest, highest) in checks {
            if !(lowest..=highest).contains(&value) {
                return fail(ParamsViolation::OutOfRange {
                    field,
                    value,
                    lowest,
                    highest,
                });
            }
        }
        for (value, field) in checks.map(|(value, field, _, _)| (value, field)) {
            if value % 2 != 0 {
                return fail(ParamsViolation::Odd { field, value });
            }
        }
        if self.min_size > self.avg_size {
            return fail(ParamsViolation::MinAboveAvg);
        }
        if self.avg_size > self.max_size {
            return fail(ParamsViolation::AvgAboveMax);
        }
        Ok(())
    }

    /// `min_size` as `usize`, for fastcdc.
    pub(crate) fn min_usize(&self) -> usize {
        self.min_size as usize
    }

    /// `avg_size` as `usize`, for fastcdc.
    pub(crate) fn avg_usize(&self) -> usize {
        self.avg_size as usize
    }

    /// `max_size` as `usize`, for fastcdc and buffer bounds.
    pub(crate) fn max_usize(&self) -> usize {
        self.max_size as usize
    }
}

impl Default for ChunkerParams {
    /// [`ChunkerParams::DEFAULT`].
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

impl fmt::Display for ChunkerParams {
    /// `min=… avg=… max=…` in bytes, as used in error messages and tool output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min={} avg={} max={}",
            self.min_size, self.avg_size, self.max_size
        )
    }
}

/// One of the three sizes of [`ChunkerParams`], as named in a [`ParamsViolation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeField {
    /// [`ChunkerParams::min_size`].
    Min,
    /// [`ChunkerParams::avg_size`].
    Avg,
    /// [`ChunkerParams::max_size`].
    Max,
}

impl fmt::Display for SizeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeField::Min => "min_size",
            SizeField::Avg => "avg_size",
            SizeField::Max => "max_size",
        })
    }
}

/// Which condition of [`ChunkerParams::validate`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamsViolation {
    /// A size lies outside what fastcdc v2020 accepts for that field.
    OutOfRange {
        /// The offending field.
        field: SizeField,
        /// Its value.
        value: u32,
        /// Smallest accepted value.
        lowest: u32,
        /// Largest accepted value.
        highest: u32,
    },
    /// A size is odd; fastcdc v2020 tests cut points two bytes at a time and needs even
    /// sizes.
    Odd {
        /// The offending field.
        field: SizeField,
        /// Its value.
        value: u32,
    },
    /// `min_size > avg_size`.
    MinAboveAvg,
    /// `avg_size > max_size`.
    AvgAboveMax,
}

/// Invalid [`ChunkerParams`]: which params, and which bound they violate.
///
/// Permanent: the same params fail the same way every time, so retrying cannot help. For
/// params read from a repository this means the stored config is corrupt or was written
/// by an incompatible version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamsError {
    params: ChunkerParams,
    violation: ParamsViolation,
}

impl ParamsError {
    fn new(params: ChunkerParams, violation: ParamsViolation) -> Self {
        ParamsError { params, violation }
    }

    /// The rejected params.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The violated condition.
    pub fn violation(&self) -> ParamsViolation {
        self.violation
    }
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid chunker params ({}): ", self.params)?;
        match self.violation {
            ParamsViolation::OutOfRange {
                field,
                value,
                lowest,
                highest,
            } => write!(
                f,
                "{field} {value} is outside the accepted range {lowest}..={highest}"
            ),
            ParamsViolation::Odd { field, value } => {
                write!(f, "{field} {value} is odd, sizes must be even")
            }
            ParamsViolation::MinAboveAvg => write!(
                f,
                "min_size {} is larger than avg_size {}",
                self.params.min_size, self.params.avg_size
            ),
            ParamsViolation::AvgAboveMax => write!(
                f,
                "avg_size {} is larger than max_size {}",
                self.params.avg_size, self.params.max_size
            ),
        }
    }
}

impl std::error::Error for ParamsError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn violation(min: u32, avg: u32, max: u32) -> ParamsViolation {
        ChunkerParams::new(min, avg, max)
            .expect_err("params must be rejected")
            .violation()
    }

    #[test]
    fn presets_are_valid() {
        ChunkerParams::DEFAULT.validate().unwrap();
        ChunkerParams::SMALL.validate().unwrap();
        assert_eq!(ChunkerParams::default(), ChunkerParams::DEFAULT);
    }

    #[test]
    fn fastcdc_extremes_are_valid() {
        ChunkerParams::new(64, 256, 1024).unwrap();
        ChunkerParams::new(1 << 20, 4 << 20, 16 << 20).unwrap();
        // min == avg == max is fixed-size chunking, which fastcdc handles.
        ChunkerParams::new(1 << 20, 1 << 20, 1 << 20).unwrap();
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert!(matches!(
            violation(0, 0, 0),
            ParamsViolation::OutOfRange {
                field: SizeField::Min,
                value: 0,
                ..
            }
        ));
        assert!(matches!(
            violation(64, 0, 1024),
            ParamsViolation::OutOfRange {
                field: SizeField::Avg,
                ..
            }
        ));
        assert!(matches!(
            violation(64, 256, 0),
            ParamsViolation::OutOfRange {
                field: SizeField::Max,
                ..
            }
        ));
    }

    #[test]
    fn huge_sizes_are_rejected() {
        assert!(matches!(
            violation(u32::MAX, u32::MAX, u32::MAX),
            ParamsViolation::OutOfRange {
                field: SizeField::Min,
                ..
            }
        ));
        assert!(matches!(
            violation(1 << 20, 8 << 20, 16 << 20),
            ParamsViolation::OutOfRange {
                field: SizeField::Avg,
                ..
            }
        ));
        assert!(matches!(
            violation(1 << 20, 4 << 20, 32 << 20),
            ParamsViolation::OutOfRange {
                field: SizeField::Max,
                ..
            }
        ));
    }

    #[test]
    fn misordered_sizes_are_rejected() {
        assert_eq!(violation(8192, 4096, 65536), ParamsViolation::MinAboveAvg);
        assert_eq!(violation(4096, 65536, 16384), ParamsViolation::AvgAboveMax);
    }

    #[test]
    fn odd_sizes_are_rejected() {
        assert_eq!(
            violation(4097, 16384, 65536),
            ParamsViolation::Odd {
                field: SizeField::Min,
                value: 4097
            }
        );
        assert_eq!(
            violation(4096, 16385, 65536),
            ParamsViolation::Odd {
                field: SizeField::Avg,
                value: 16385
            }
        );
    }

    #[test]
    fn error_message_names_the_bound() {
        let err = ChunkerParams::new(32, 256, 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid chunker params (min=32 avg=256 max=1024): \
             min_size 32 is outside the accepted range 64..=1048576"
        );
        let err = ChunkerParams::new(8192, 4096, 65536).unwrap_err();
        assert!(err
            .to_string()
            .contains("min_size 8192 is larger than avg_size 4096"));
    }

    proptest! {
        /// Arbitrary params never panic validation, and whatever passes lies within
        /// fastcdc's documented bounds.
        #[test]
        fn validate_accepts_only_fastcdc_bounds(min: u32, avg: u32, max: u32) {
            let params = ChunkerParams { min_size: min, avg_size: avg, max_size: max };
            if params.validate().is_ok() {
                let (min, avg, max) = (min as usize, avg as usize, max as usize);
                prop_assert!((v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min));
                prop_assert!((v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg));
                prop_assert!((v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max));
                prop_assert!(min % 2 == 0 && avg % 2 == 0 && max % 2 == 0);
                prop_assert!(min <= avg && avg <= max);
            }
        }
    }
}
