//! Scenario files: parse; a parsed scenario is checked against the built-in
//! stack (names of AZs and instances) and scaled as CI scales it, neither of
//! which may panic whatever the file said.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use voyager_sim::harness::builtin_stack;
use voyager_sim::scenario::parse_scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_scenario(Path::new("fuzz.toml"), text) {
        Ok(mut s) => {
            let _ = s.scaled(0.2);
            let stack = builtin_stack();
            if let Err(e) = s.validate(&stack) {
                assert!(!e.trim().is_empty(), "a refusal with no reason");
            }
        }
        Err(e) => voyager_sim_fuzz::assert_located(text, &e),
    }
});
