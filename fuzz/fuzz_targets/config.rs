//! Training configurations: parsed as `lits train --config` reads them, then validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lits_train::config::TrainConfig;

fuzz_target!(|data: &[u8]| {
    let path = lits_fuzz::scratch("config.json", data);
    match TrainConfig::from_file(&path) {
        // Validation names the field, not the file; it must only never panic.
        Ok(cfg) => drop(cfg.validate()),
        Err(e) => lits_fuzz::names_file(&path, &e),
    }
});
