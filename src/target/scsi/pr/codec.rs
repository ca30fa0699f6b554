//! The saved form of a unit's persistent reservation state.
//!
//! Layout (big-endian):
//!
//! ```text
//! "TRPR" | version u8 (1) | body length u32 | body | crc32c u32 of everything before it
//! body: generation u32 | flags u8 (bit 0 APTPL, bit 1 reservation present)
//!       | reservation type code u8 | holder u32 (registration index, or u32::MAX when
//!         every registrant holds it) | registration count u32
//!       | per registration: key u64 | flags u8 (bit 0 all target ports)
//!         | relative port u16 | port name length u16 | port name
//!         | initiator name length u16 | initiator name
//! ```
//!
//! The SPC-2 reservation is not saved (it does not survive a restart). Decoding checks the
//! magic, version, lengths, checksum, UTF-8 names, type codes, holder index, and rejects
//! trailing bytes; any fault gives `None`, never a panic.

use super::prout::MAX_REGISTRATIONS;
use super::{PersistentReservation, PrType, RegistrantId, Registration, Reservations};

const MAGIC: &[u8; 4] = b"TRPR";
const VERSION: u8 = 1;
const HEADER: usize = 9;
const EVERY_REGISTRANT: u32 = u32::MAX;
const FLAG_APTPL: u8 = 0x01;
const FLAG_RESERVED: u8 = 0x02;
const FLAG_ALL_TARGET_PORTS: u8 = 0x01;

pub(super) fn encode(state: &Reservations) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + state.registrations.len() * 96);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&state.generation.to_be_bytes());
    let mut flags = 0;
    if state.aptpl {
        flags |= FLAG_APTPL;
    }
    if state.reservation.is_some() {
        flags |= FLAG_RESERVED;
    }
    out.push(flags);
    let (code, holder) = match &state.reservation {
        Some(reservation) => {
            let holder = reservation
                .holder
                .as_ref()
                .map_or(EVERY_REGISTRANT, |holder| {
                    let index = state
                        .registrations
                        .iter()
                        .position(|registration| &registration.id == holder);
                    index
                        .and_then(|index| u32::try_from(index).ok())
                        .unwrap_or(EVERY_REGISTRANT)
                });
            (reservation.kind.code(), holder)
        }
        None => (0, EVERY_REGISTRANT),
    };
    out.push(code);
    out.extend_from_slice(&holder.to_be_bytes());
    let count = u32::try_from(state.registrations.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for registration in &state.registrations {
        out.extend_from_slice(&registration.key.to_be_bytes());
        let all_ports = registration.id.relative_port.is_none();
        out.push(if all_ports { FLAG_ALL_TARGET_PORTS } else { 0 });
        out.extend_from_slice(&registration.id.relative_port.unwrap_or(0).to_be_bytes());
        put_text(&mut out, &registration.id.initiator_port);
        put_text(&mut out, &registration.initiator_name);
    }
    let body_length = u32::try_from(out.len() - HEADER).unwrap_or(u32::MAX);
    out[5..HEADER].copy_from_slice(&body_length.to_be_bytes());
    let checksum = crc32c::crc32c(&out);
    out.extend_from_slice(&checksum.to_be_bytes());
    out
}

/// Names longer than a u16 length are cut (iSCSI names are at most 223 bytes).
fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&u16::try_from(end).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

pub(super) fn decode(bytes: &[u8]) -> Option<Reservations> {
    let (framed, checksum) = bytes.split_last_chunk::<4>()?;
    if crc32c::crc32c(framed) != u32::from_be_bytes(*checksum) {
        return None;
    }
    let mut reader = Reader { rest: framed };
    if reader.take(4)? != MAGIC || reader.u8()? != VERSION {
        return None;
    }
    let body_length = usize::try_from(reader.u32()?).ok()?;
    if reader.rest.len() != body_length {
        return None;
    }
    let generation = reader.u32()?;
    let flags = reader.u8()?;
    let code = reader.u8()?;
    let holder = reader.u32()?;
    let count = usize::try_from(reader.u32()?).ok()?;
    if count > MAX_REGISTRATIONS {
        return None;
    }
    let mut registrations = Vec::with_capacity(count);
    for _ in 0..count {
        let key = reader.u64()?;
        let all_ports = reader.u8()? & FLAG_ALL_TARGET_PORTS != 0;
        let relative_port = reader.u16()?;
        let initiator_port = reader.text()?;
        let initiator_name = reader.text()?;
        registrations.push(Registration {
            id: RegistrantId {
                initiator_port,
                relative_port: (!all_ports).then_some(relative_port),
            },
            initiator_name,
            key,
        });
    }
    if !reader.rest.is_empty() {
        return None;
    }
    let reservation = if flags & FLAG_RESERVED != 0 {
        let kind = PrType::from_code(code)?;
        let holder = if kind.all_registrants() {
            None
        } else {
            let index = usize::try_from(holder).ok()?;
            Some(registrations.get(index)?.id.clone())
        };
        Some(PersistentReservation { kind, holder })
    } else {
        None
    };
    Some(Reservations {
        registrations,
        reservation,
        generation,
        aptpl: flags & FLAG_APTPL != 0,
        spc2_holder: None,
    })
}

/// Bounds-checked reading from the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        if self.rest.len() < length {
            return None;
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    fn text(&mut self) -> Option<String> {
        let length = usize::from(self.u16()?);
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}
