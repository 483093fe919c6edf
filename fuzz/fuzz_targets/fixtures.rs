//! Fixture files, all five formats; the first byte picks which parser reads
//! the rest, so one corpus grows inputs for each.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use voyager_sim::fixtures::{parse_influxdb, parse_kafka, parse_s3};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let file = Path::new("fuzz.toml");
    match which % 5 {
        0 => {
            if let Err(e) = parse_kafka(file, text) {
                voyager_sim_fuzz::assert_located(text, &e)
            }
        }
        1 => {
            if let Err(e) = parse_influxdb(file, text) {
                voyager_sim_fuzz::assert_located(text, &e)
            }
        }
        2 => {
            if let Err(e) = parse_s3(file, text) {
                voyager_sim_fuzz::assert_located(text, &e)
            }
        }
        3 => {
            if let Err(e) = auth0_mock::config::parse_tenant(file, text) {
                let problems = e.problems.iter().map(|p| (p.line, p.col, p.message.as_str(), p.help.as_str()));
                voyager_sim_fuzz::assert_problems(text, problems);
                let _ = e.to_string();
            }
        }
        _ => {
            if let Err(e) = vault_lite::provision::Fixture::parse(text, "fuzz.toml") {
                assert!(!e.to_string().trim().is_empty(), "vault fixture: an empty refusal");
            }
        }
    }
});
