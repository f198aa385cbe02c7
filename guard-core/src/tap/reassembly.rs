//! One direction of a TCP connection turned back into an ordered byte stream.
//!
//! Sequence numbers are mapped to 64-bit stream offsets relative to the first byte we deliver, so
//! wrap-around is handled as long as a segment is within 2 GiB of the delivery point. In-order data
//! is handed to the caller without copying; data ahead of a hole is copied into a bounded
//! out-of-order buffer (per stream and, through a shared counter, in total). Retransmissions and
//! overlaps keep the first copy: a later copy is trimmed to the bytes not seen yet. A copy that
//! overlaps buffered bytes with different ones is counted ([`PushOutcome::conflicting`]): the
//! tap and the server may then read different streams (a receiver may keep either copy).
//! Bytes already delivered are not kept, so a retransmission of them is only trimmed.
//!
//! A stream seen without its SYN (mid-stream pickup) starts at its first data segment.
use std::collections::BTreeMap;

/// Why a stream had to be abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// Buffering this segment would pass the per-stream out-of-order limit.
    #[error("stream out-of-order buffer full: {buffered} + {incoming} bytes > {limit}")]
    FlowBufferFull {
        buffered: usize,
        incoming: usize,
        limit: usize,
    },
    /// Buffering this segment would pass the out-of-order limit shared by all streams.
    #[error("total out-of-order buffer full: {total} + {incoming} bytes > {limit}")]
    TotalBufferFull {
        total: usize,
        incoming: usize,
        limit: usize,
    },
}

/// The bounds a stream works within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Out-of-order bytes one stream may hold.
    pub max_flow_buffer: usize,
    /// Out-of-order bytes all streams together may hold.
    pub max_total_buffer: usize,
}

/// What a call to [`Stream::push`] did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Bytes handed to the sink (in order, including drained out-of-order data).
    pub delivered: usize,
    /// Bytes dropped because they had been seen already (retransmission or overlap).
    pub duplicate: usize,
    /// Bytes copied into the out-of-order buffer.
    pub buffered: usize,
    /// Bytes that overlapped buffered bytes with a different value.
    pub conflicting: usize,
}

/// One direction of a TCP connection.
#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the next byte to deliver; `None` until a SYN or the first data segment.
    next_seq: Option<u32>,
    /// Stream offset of `next_seq`.
    offset: u64,
    /// Out-of-order segments by stream offset; entries never overlap.
    ooo: BTreeMap<u64, Vec<u8>>,
    ooo_bytes: usize,
    /// Sequence number just after the last byte (the FIN's own number), once a FIN was seen.
    fin_seq: Option<u32>,
    /// True once the FIN's sequence number was reached: every byte was delivered.
    finished: bool,
    /// True once the stream was picked up without its SYN.
    pub midstream: bool,
}

impl Stream {
    /// Records a SYN: the next data byte is `seq + 1`.
    pub fn on_syn(&mut self, seq: u32) {
        if self.next_seq.is_none() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// True once the first byte's sequence number is known (from a SYN or the first data).
    #[must_use]
    pub fn started(&self) -> bool {
        self.next_seq.is_some()
    }

    /// True when a reset with sequence number `seq` lies within `window` bytes from the next
    /// byte this stream expects (RFC 5961 spirit: a reset from off-path must guess it). A
    /// stream that has not started accepts any.
    #[must_use]
    pub fn accepts_reset(&self, seq: u32, window: u32) -> bool {
        self.next_seq
            .is_none_or(|next| seq.wrapping_sub(next) <= window)
    }

    /// Bytes held in the out-of-order buffer.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.ooo_bytes
    }

    /// True once every byte up to the FIN was delivered.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Drops all buffered data, returning how many bytes were freed (to give back to the shared
    /// total).
    pub fn clear(&mut self) -> usize {
        self.ooo.clear();
        std::mem::take(&mut self.ooo_bytes)
    }

    /// Feeds one segment; in-order bytes go to `sink`. `total` is the out-of-order byte count
    /// shared by every stream and is kept up to date.
    pub fn push(
        &mut self,
        seq: u32,
        payload: &[u8],
        fin: bool,
        limits: Limits,
        total: &mut usize,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<PushOutcome, ReassemblyError> {
        let mut outcome = PushOutcome::default();
        let next = match self.next_seq {
            Some(next) => next,
            None if payload.is_empty() && !fin => return Ok(outcome),
            None => {
                self.midstream = true;
                self.next_seq = Some(seq);
                seq
            }
        };
        if fin && self.fin_seq.is_none() {
            self.fin_seq = Some(seq.wrapping_add(payload.len() as u32));
        }
        let diff = i64::from(seq.wrapping_sub(next) as i32);
        let mut data = payload;
        let mut start = self.offset as i64 + diff;
        if start < self.offset as i64 {
            let seen = ((self.offset as i64 - start) as usize).min(data.len());
            outcome.duplicate += seen;
            data = &data[seen..];
            start = self.offset as i64;
        }
        if !data.is_empty() {
            let start = start as u64;
            if start == self.offset && self.ooo.is_empty() {
                self.deliver(data, sink, &mut outcome);
            } else {
                // Through the buffer, so bytes buffered earlier win over this copy; in-order data
                // is drained at once and is not held against the limits.
                let in_order = start == self.offset;
                self.insert(start, data, limits, in_order, total, &mut outcome)?;
                if in_order {
                    self.drain(total, sink, &mut outcome);
                }
            }
        }
        if let (Some(fin_seq), Some(next)) = (self.fin_seq, self.next_seq) {
            // Reached when everything before the FIN has been delivered.
            if fin_seq == next {
                self.finished = true;
            }
        }
        Ok(outcome)
    }

    fn deliver(&mut self, data: &[u8], sink: &mut dyn FnMut(&[u8]), outcome: &mut PushOutcome) {
        sink(data);
        self.offset += data.len() as u64;
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(data.len() as u32));
        outcome.delivered += data.len();
    }

    /// Delivers buffered segments that became contiguous, trimming what was already delivered.
    fn drain(&mut self, total: &mut usize, sink: &mut dyn FnMut(&[u8]), outcome: &mut PushOutcome) {
        while let Some(entry) = self.ooo.first_entry() {
            let at = *entry.key();
            if at > self.offset {
                break;
            }
            let data = entry.remove();
            self.ooo_bytes -= data.len();
            *total = total.saturating_sub(data.len());
            let skip = ((self.offset - at) as usize).min(data.len());
            outcome.duplicate += skip;
            if skip < data.len() {
                self.deliver(&data[skip..], sink, outcome);
            }
        }
    }

    /// Copies the parts of `[at, at + data.len())` not already buffered (first copy wins).
    fn insert(
        &mut self,
        at: u64,
        data: &[u8],
        limits: Limits,
        in_order: bool,
        total: &mut usize,
        outcome: &mut PushOutcome,
    ) -> Result<(), ReassemblyError> {
        let end = at + data.len() as u64;
        // Gaps of [at, end) not covered by existing entries; covered parts are compared.
        let mut gaps = Vec::new();
        let mut cursor = at;
        if let Some((&s, v)) = self.ooo.range(..at).next_back() {
            outcome.conflicting += differing(at, data, s, v);
            cursor = cursor.max(s + v.len() as u64);
        }
        for (&s, v) in self.ooo.range(at..end) {
            outcome.conflicting += differing(at, data, s, v);
            if s > cursor {
                gaps.push((cursor, s));
            }
            cursor = cursor.max(s + v.len() as u64);
        }
        if cursor < end {
            gaps.push((cursor, end));
        }
        let new: usize = gaps.iter().map(|(s, e)| (e - s) as usize).sum();
        outcome.duplicate += data.len() - new;
        if new == 0 {
            return Ok(());
        }
        // The hole before `at` counts too: a far-ahead segment would pin memory until it fills.
        let reach = (end - self.offset) as usize;
        if in_order {
            // Drained right away by the caller.
        } else if self.ooo_bytes + new > limits.max_flow_buffer || reach > limits.max_flow_buffer {
            return Err(ReassemblyError::FlowBufferFull {
                buffered: self.ooo_bytes,
                incoming: new,
                limit: limits.max_flow_buffer,
            });
        }
        if !in_order && *total + new > limits.max_total_buffer {
            return Err(ReassemblyError::TotalBufferFull {
                total: *total,
                incoming: new,
                limit: limits.max_total_buffer,
            });
        }
        for (s, e) in gaps {
            let from = (s - at) as usize;
            let to = (e - at) as usize;
            self.ooo.insert(s, data[from..to].to_vec());
        }
        self.ooo_bytes += new;
        *total += new;
        if !in_order {
            outcome.buffered += new;
        }
        Ok(())
    }
}

/// Bytes where `data` (at stream offset `at`) and a buffered entry `v` (at `s`) overlap with
/// different values.
fn differing(at: u64, data: &[u8], s: u64, v: &[u8]) -> usize {
    let from = at.max(s);
    let to = (at + data.len() as u64).min(s + v.len() as u64);
    if from >= to {
        return 0;
    }
    let a = &data[(from - at) as usize..(to - at) as usize];
    let b = &v[(from - s) as usize..(to - s) as usize];
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}
