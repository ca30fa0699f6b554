//! P+Q parity over the data units of a row, computed in DRAM (Reed-Solomon over GF(2^16)
//! from `reed-solomon-simd`: two recovery shards, so any two lost units of a row can be
//! rebuilt). Encoder and decoder are kept and reset between rows so steady-state encoding
//! does not allocate per row.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Why parity could not be computed or used.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error("erasure coding failed: {0}")]
    Codec(String),
    #[error("more than two units of the row are unreadable")]
    TooManyErasures,
}

fn codec(err: reed_solomon_simd::Error) -> ParityError {
    ParityError::Codec(err.to_string())
}

/// Computes and uses P and Q for rows of `data` units of `unit_len` bytes.
pub struct ParityCodec {
    data: usize,
    unit_len: usize,
    encoder: ReedSolomonEncoder,
    decoder: ReedSolomonDecoder,
}

impl ParityCodec {
    pub fn new(data: usize, unit_len: usize) -> Result<Self, ParityError> {
        Ok(ParityCodec {
            data,
            unit_len,
            encoder: ReedSolomonEncoder::new(data, 2, unit_len).map_err(codec)?,
            decoder: ReedSolomonDecoder::new(data, 2, unit_len).map_err(codec)?,
        })
    }

    /// Fills `p` and `q` from the row's data units.
    pub fn encode(
        &mut self,
        units: &[&[u8]],
        p: &mut [u8],
        q: &mut [u8],
    ) -> Result<(), ParityError> {
        self.encoder
            .reset(self.data, 2, self.unit_len)
            .map_err(codec)?;
        for unit in units {
            self.encoder.add_original_shard(unit).map_err(codec)?;
        }
        let result = self.encoder.encode().map_err(codec)?;
        p.copy_from_slice(
            result
                .recovery(0)
                .expect("two recovery shards were configured"),
        );
        q.copy_from_slice(
            result
                .recovery(1)
                .expect("two recovery shards were configured"),
        );
        Ok(())
    }

    /// Rebuilds the units listed in `lost` (indexes `0..data` are data units, `data` is P
    /// and `data + 1` is Q) from the others, in place. At most two may be lost.
    pub fn rebuild(&mut self, units: &mut [&mut [u8]], lost: &[usize]) -> Result<(), ParityError> {
        if lost.len() > 2 {
            return Err(ParityError::TooManyErasures);
        }
        if lost.iter().all(|&index| index >= self.data) {
            // Only parity is lost: recompute it.
            let (data, parity) = units.split_at_mut(self.data);
            let data: Vec<&[u8]> = data.iter().map(|unit| &**unit).collect();
            let (p, q) = parity.split_at_mut(1);
            return self.encode(&data, p[0], q[0]);
        }
        self.decoder
            .reset(self.data, 2, self.unit_len)
            .map_err(codec)?;
        for (index, unit) in units.iter().enumerate() {
            if lost.contains(&index) {
                continue;
            }
            if index < self.data {
                self.decoder
                    .add_original_shard(index, &**unit)
                    .map_err(codec)?;
            } else {
                self.decoder
                    .add_recovery_shard(index - self.data, &**unit)
                    .map_err(codec)?;
            }
        }
        let result = self.decoder.decode().map_err(codec)?;
        for &index in lost.iter().filter(|&&index| index < self.data) {
            let restored = result
                .restored_original(index)
                .ok_or(ParityError::TooManyErasures)?;
            units[index].copy_from_slice(restored);
        }
        drop(result);
        if lost.iter().any(|&index| index >= self.data) {
            let (data, parity) = units.split_at_mut(self.data);
            let data: Vec<&[u8]> = data.iter().map(|unit| &**unit).collect();
            let (p, q) = parity.split_at_mut(1);
            self.encode(&data, p[0], q[0])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(seed: u64, data: usize, len: usize) -> Vec<Vec<u8>> {
        let mut state = seed | 1;
        (0..data + 2)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn any_two_lost_units_are_rebuilt(seed in any::<u64>(), a in 0usize..6, b in 0usize..6) {
            let (data, len) = (4, 1024);
            let mut units = row(seed, data, len);
            {
                let (d, parity) = units.split_at_mut(data);
                let refs: Vec<&[u8]> = d.iter().map(|u| u.as_slice()).collect();
                let (p, q) = parity.split_at_mut(1);
                let mut codec = ParityCodec::new(data, len).unwrap();
                codec.encode(&refs, &mut p[0], &mut q[0]).unwrap();
            }
            let original = units.clone();
            let lost: Vec<usize> = if a == b { vec![a] } else { vec![a, b] };
            for &index in &lost {
                units[index].iter_mut().for_each(|byte| *byte = 0xEE);
            }
            let mut codec = ParityCodec::new(data, len).unwrap();
            let mut refs: Vec<&mut [u8]> = units.iter_mut().map(|u| u.as_mut_slice()).collect();
            codec.rebuild(&mut refs, &lost).unwrap();
            prop_assert_eq!(units, original);
        }
    }

    #[test]
    fn three_losses_are_refused() {
        let mut units = row(7, 4, 64);
        let mut codec = ParityCodec::new(4, 64).unwrap();
        let mut refs: Vec<&mut [u8]> = units.iter_mut().map(|u| u.as_mut_slice()).collect();
        assert!(matches!(
            codec.rebuild(&mut refs, &[0, 1, 2]),
            Err(ParityError::TooManyErasures)
        ));
    }
}
