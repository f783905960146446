//! Fuzzes the deadline scheduler with sequences of driver inputs; see
//! `fuzz/scheduler_props.rs`.
#![no_main]

#[path = "../scheduler_props.rs"]
mod scheduler_props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| scheduler_props::scheduler(data));
