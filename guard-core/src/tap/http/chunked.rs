//! Chunked transfer coding: the framing bytes (size lines, CRLFs, trailers) one at a time, while
//! the parser takes chunk data in bulk.
use super::HttpError;

/// Longest chunk-size line (with extensions) we accept.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub(super) enum Chunk {
    Size {
        value: u64,
        digits: u8,
        ext: bool,
        line: usize,
    },
    SizeLf {
        value: u64,
        digits: u8,
    },
    Data(u64),
    DataCr,
    DataLf,
    Trailer {
        line: usize,
        total: usize,
    },
}

impl Chunk {
    /// Expecting a chunk-size line.
    pub(super) const START: Self = Self::Size {
        value: 0,
        digits: 0,
        ext: false,
        line: 0,
    };
}

/// One framing byte of a chunked body (chunk data is handled in bulk by the caller): the next
/// state, or `None` when the blank line ending the trailer section completed the message.
pub(super) fn chunk_byte(
    chunk: Chunk,
    b: u8,
    max_trailer: usize,
) -> Result<Option<Chunk>, HttpError> {
    let next = match chunk {
        Chunk::Size {
            value,
            digits,
            ext,
            line,
        } => {
            if line >= MAX_CHUNK_LINE {
                return Err(HttpError::BadChunkSize);
            }
            let line = line + 1;
            match b {
                b'\r' => Chunk::SizeLf { value, digits },
                b'\n' => size_done(value, digits)?,
                _ if ext => Chunk::Size {
                    value,
                    digits,
                    ext,
                    line,
                },
                b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                    value,
                    digits,
                    ext: true,
                    line,
                },
                _ => {
                    let d = char::from(b).to_digit(16).ok_or(HttpError::BadChunkSize)?;
                    if digits >= 15 {
                        return Err(HttpError::BadChunkSize);
                    }
                    Chunk::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                        ext,
                        line,
                    }
                }
            }
        }
        Chunk::SizeLf { value, digits } => {
            if b != b'\n' {
                return Err(HttpError::BadChunkSize);
            }
            size_done(value, digits)?
        }
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            b'\n' => Chunk::START,
            _ => return Err(HttpError::BadChunkTerminator),
        },
        Chunk::DataLf => {
            if b != b'\n' {
                return Err(HttpError::BadChunkTerminator);
            }
            Chunk::START
        }
        Chunk::Trailer { line, total } => {
            if total >= max_trailer {
                return Err(HttpError::TrailerTooLarge { limit: max_trailer });
            }
            match b {
                b'\n' if line == 0 => return Ok(None),
                b'\n' => Chunk::Trailer {
                    line: 0,
                    total: total + 1,
                },
                b'\r' => Chunk::Trailer {
                    line,
                    total: total + 1,
                },
                _ => Chunk::Trailer {
                    line: line + 1,
                    total: total + 1,
                },
            }
        }
        // Data bytes never reach here: the caller takes them in bulk.
        Chunk::Data(left) => Chunk::Data(left),
    };
    Ok(Some(next))
}

fn size_done(value: u64, digits: u8) -> Result<Chunk, HttpError> {
    if digits == 0 {
        return Err(HttpError::BadChunkSize);
    }
    Ok(if value == 0 {
        Chunk::Trailer { line: 0, total: 0 }
    } else {
        Chunk::Data(value)
    })
}
