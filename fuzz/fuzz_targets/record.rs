//! Record decoding and event validation on arbitrary bodies: no panic, and
//! every event is either accepted with usable routing fields or rejected
//! with a reason and a detail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::decode::{compact, split_events, unwrap_body};
use shared::partition::TenantKey;
use shared::profile::{FieldPath, Profile};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let profiles = [
        Profile::airkit_app_events(),
        Profile::airkit_audit_logs(),
        Profile::generic(
            FieldPath::parse("/tenant/id").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            Some(FieldPath::parse("/id").unwrap()),
            Some(FieldPath::parse("/type").unwrap()),
        ),
    ];
    let unwrapped = unwrap_body(&body);
    let events = match split_events(&unwrapped.payload) {
        Ok(events) => events,
        Err(rejection) => {
            assert!(!rejection.detail.is_empty(), "a rejection without detail");
            return;
        }
    };
    for event in events {
        for profile in &profiles {
            match profile.read(event) {
                Ok(fields) => {
                    // An accepted event is JSON, compacts to one line that
                    // means the same, and routes to a key segment that
                    // cannot leave its prefix.
                    let value: serde_json::Value =
                        serde_json::from_str(event).expect("accepted events are JSON");
                    let line = compact(event);
                    assert!(!line.contains('\n'), "a compacted event spans lines");
                    let again: serde_json::Value =
                        serde_json::from_str(&line).expect("a compacted event is JSON");
                    assert_eq!(value, again, "compacting changed the event");
                    assert!(
                        !fields.tenant.is_empty(),
                        "an accepted event without tenant"
                    );
                    let segment = TenantKey::encode(&fields.tenant);
                    let segment = segment.as_str();
                    assert!(
                        !segment.is_empty()
                            && !segment.contains('/')
                            && segment != "."
                            && segment != "..",
                        "tenant {:?} became key segment {segment:?}",
                        fields.tenant
                    );
                }
                Err(rejection) => {
                    assert!(!rejection.detail.is_empty(), "a rejection without detail");
                }
            }
        }
    }
});
