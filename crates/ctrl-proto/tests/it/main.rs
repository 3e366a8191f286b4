//! The generated contract: every message survives binary and JSON round
//! trips with every field set, and the proto sources pass `buf lint`.

mod lint;
mod round_trip;
