//! Stack files: parse, and a parsed stack must write itself back to a file
//! that parses to the same stack (what `Stack::relocated` and the tests
//! rely on).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use voyager_sim::stack::parse_stack;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_stack(Path::new("fuzz.toml"), text) {
        Ok(stack) => {
            let written = stack.to_toml();
            let again = parse_stack(Path::new("written.toml"), &written)
                .unwrap_or_else(|e| panic!("to_toml wrote a file that does not parse:\n{written}\n{e}"));
            assert_eq!(stack, again, "to_toml does not round-trip:\n{written}");
        }
        Err(e) => voyager_sim_fuzz::assert_located(text, &e),
    }
});
