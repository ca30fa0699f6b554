//! Unit tests of the reservations layer.
