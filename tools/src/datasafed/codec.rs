//! Compression formats of datasafed's `-z`/`-d` algorithms: encoders and decoders.

use super::*;

/// Stream formats: algorithms of one format decode each other's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Zstd,
    Gzip,
    Deflate,
    Lz4,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Codec {
    pub(super) name: &'static str,
    pub(super) format: Format,
    pub(super) level: u32,
}

pub(super) const CODECS: &[Codec] = &[
    Codec {
        name: "deflate-best-compression",
        format: Format::Deflate,
        level: 9,
    },
    Codec {
        name: "deflate-best-speed",
        format: Format::Deflate,
        level: 1,
    },
    Codec {
        name: "deflate-default",
        format: Format::Deflate,
        level: 6,
    },
    Codec {
        name: "gzip",
        format: Format::Gzip,
        level: 6,
    },
    Codec {
        name: "gzip-best-compression",
        format: Format::Gzip,
        level: 9,
    },
    Codec {
        name: "gzip-best-speed",
        format: Format::Gzip,
        level: 1,
    },
    Codec {
        name: "lz4",
        format: Format::Lz4,
        level: 0,
    },
    Codec {
        name: "pgzip",
        format: Format::Gzip,
        level: 6,
    },
    Codec {
        name: "pgzip-best-compression",
        format: Format::Gzip,
        level: 9,
    },
    Codec {
        name: "pgzip-best-speed",
        format: Format::Gzip,
        level: 1,
    },
    Codec {
        name: "zstd",
        format: Format::Zstd,
        level: 3,
    },
    Codec {
        name: "zstd-best-compression",
        format: Format::Zstd,
        level: 11,
    },
    Codec {
        name: "zstd-better-compression",
        format: Format::Zstd,
        level: 7,
    },
    Codec {
        name: "zstd-fastest",
        format: Format::Zstd,
        level: 1,
    },
];

/// datasafed algorithms this build cannot produce or read (no Rust S2 implementation).
pub(super) const UNSUPPORTED: &[&str] =
    &["s2-better", "s2-default", "s2-parallel-4", "s2-parallel-8"];

pub(super) fn codec(name: &str) -> Result<Codec> {
    let canonical = match name {
        "zstd-better" => "zstd-better-compression",
        "zstd-best" => "zstd-best-compression",
        n => n,
    };
    if let Some(c) = CODECS.iter().find(|c| c.name == canonical) {
        return Ok(*c);
    }
    let supported: Vec<&str> = CODECS.iter().map(|c| c.name).collect();
    if UNSUPPORTED.contains(&name) {
        bail!(
            "compression algorithm {name:?} (S2) is not supported by dprepo; supported: {}",
            supported.join(", ")
        );
    }
    bail!(
        "invalid compression algorithm {name:?}, choices: {}",
        supported.join(", ")
    )
}

/// A compressing writer that must be finished to write its trailer.
pub(super) trait Encoder: Write + Send {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()>;
}

impl<W: Write + Send> Encoder for zstd::stream::write::Encoder<'static, W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for flate2::write::GzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for flate2::write::DeflateEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}
impl<W: Write + Send> Encoder for lz4_flex::frame::FrameEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish().map_err(std::io::Error::other)?.flush()
    }
}

/// `Box<dyn Encoder>` as a plain `Write` (no trait upcasting before Rust 1.86).
pub(super) struct EncoderWriter(pub(super) Box<dyn Encoder>);

impl Write for EncoderWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

pub(super) fn encoder(c: Codec, out: Box<dyn Write + Send>) -> Result<Box<dyn Encoder>> {
    Ok(match c.format {
        Format::Zstd => Box::new(
            zstd::stream::write::Encoder::new(out, c.level as i32)
                .context("starting the zstd encoder")?,
        ),
        Format::Gzip => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::new(c.level),
        )),
        Format::Deflate => Box::new(flate2::write::DeflateEncoder::new(
            out,
            flate2::Compression::new(c.level),
        )),
        Format::Lz4 => Box::new(lz4_flex::frame::FrameEncoder::new(out)),
    })
}

pub(super) fn decoder(c: Codec, input: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    Ok(match c.format {
        Format::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).context("starting the zstd decoder")?)
        }
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Format::Deflate => Box::new(flate2::read::DeflateDecoder::new(input)),
        Format::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
    })
}

// ---------------------------------------------------------------------------------
// Configuration, key and repository.
