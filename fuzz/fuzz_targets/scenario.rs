//! Scenario files: parse; a parsed scenario is checked against the built-in
//! stack (names of AZs and instances) and scaled as CI scales it, neither of
//! which may panic whatever the file said.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use voyager_sim::harness::builtin_stack;
use voyager_sim::scenario::parse_scenario;
use voyager_sim::stack::Stack;

/// Parsed once, not per input: the target measures the scenario parser.
static STACK: OnceLock<Stack> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_scenario(Path::new("fuzz.toml"), text) {
        Ok(mut s) => {
            let _ = s.scaled(0.2);
            if let Err(e) = s.validate(STACK.get_or_init(builtin_stack)) {
                assert!(!e.trim().is_empty(), "a refusal with no reason");
            }
        }
        Err(e) => voyager_sim_fuzz::assert_located(text, &e),
    }
});
