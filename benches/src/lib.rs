//! Benchmarks for Petrel live in `benches/`.
