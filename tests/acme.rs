//! ACME against Pebble (filled in below).
