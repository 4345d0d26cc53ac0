//! Flow files (`conversations flow apply`): any bytes, as TOML and as JSON,
//! are read without a panic; a file that reads and validates round-trips
//! (what the server stores and hands back is the flow it validated).
#![no_main]

use conversations::{app::admin::FlowFile, domain::flow::FlowDefinition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["flow.toml", "flow.json"] {
        let Ok(file) = FlowFile::parse(name, text) else {
            continue;
        };
        let definition = FlowDefinition {
            name: file.name,
            steps: file.steps,
        };
        let Ok(valid) = definition.validate() else {
            continue;
        };
        let stored = valid.to_definition();
        let again = stored.validate().expect("a validated flow validates again");
        assert_eq!(again, valid, "validation is stable");
        let json = serde_json::to_string(&stored).expect("a flow serializes");
        let back: FlowDefinition = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(back, stored, "the stored form round-trips");
    }
});
