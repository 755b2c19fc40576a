//! An index of many customers of every kind, for the tests of the passes
//! that work a block of rows at a time.

use crate::domain::activity::EngagementKind;
use crate::domain::features::Thresholds;
use crate::domain::features::NANOS_PER_DAY;
use crate::domain::{
    Customer, CustomerId, Date, Gender, Location, Party, Profile, Relationship, Timestamp,
    TraitValue,
};
use crate::engine::index::{event_key, Event, EventRef, FeatureIndex};

/// `rows` customers, of both parties and relationships, some objecting to
/// profiling, of every age band and gender, in a few countries and many cities,
/// some with a tier trait; with none to five purchases each, some lately,
/// some long before `now`, and engagement of each kind. Every 1,013th
/// customer is deleted, so their row stays, not alive.
pub(super) fn mixed_index(rows: usize, now: i64) -> FeatureIndex {
    let day = NANOS_PER_DAY;
    let mut index = FeatureIndex::new(Thresholds::default());
    let mut events = 0u64;
    let mut event = |days_ago: u64| {
        events += 1;
        Event {
            time: now - (days_ago as i64) * day,
            amount: Some(1_000 + (events % 7) as i64 * 900),
            key: event_key(&format!("e{events}")),
            at: EventRef::new(1, 0),
        }
    };
    const COUNTRIES: [Option<&str>; 4] = [Some("TR"), Some("DE"), None, Some("IR")];
    const GENDERS: [Gender; 4] = [
        Gender::Female,
        Gender::Male,
        Gender::Unspecified,
        Gender::Other,
    ];
    for n in 0..rows as u32 {
        let mut profile = Profile {
            relationship: if n % 97 == 0 {
                Relationship::Internal
            } else {
                Relationship::External
            },
            party: if n % 5 == 0 {
                Party::Business
            } else {
                Party::Individual
            },
            objects_to_profiling: n % 31 == 0,
            // Born from 1936 to 2015, or not said.
            birth_date: (n % 9 != 0).then(|| {
                Date::from_ymd(
                    1936 + (n % 80) as i32,
                    1 + (n % 12) as i32,
                    1 + (n % 28) as i32,
                )
                .unwrap()
            }),
            gender: GENDERS[n as usize % 4],
            location: Location {
                country_code: COUNTRIES[(n / 3) as usize % 4].map(str::to_owned),
                city: format!("city {}", n % 997),
                ..Location::default()
            },
            ..Profile::default()
        };
        match n % 7 {
            0 => profile
                .traits
                .insert("tier".into(), TraitValue::String("gold".into())),
            3 => profile
                .traits
                .insert("tier".into(), TraitValue::String("silver".into())),
            _ => None,
        };
        let id = CustomerId::parse(&format!("c{n}")).unwrap();
        index.add_customer(&Customer {
            id: id.clone(),
            profile,
            create_time: Timestamp::from_nanos(0),
            update_time: Timestamp::from_nanos(0),
            create_request_id: None,
        });
        for k in 0..u64::from(n % 6) {
            // Some buy often and lately, some long ago.
            let days_ago = if n % 4 == 0 {
                400 + k * 20
            } else {
                u64::from(3 + n % 40) + k * 20
            };
            assert!(index.add_purchase(n, event(days_ago)));
        }
        let kind = match n % 11 {
            0 => Some(EngagementKind::Referral),
            1 | 2 => Some(EngagementKind::Feedback),
            3..=5 => Some(EngagementKind::Visit),
            _ => None,
        };
        if let Some(kind) = kind {
            assert!(index.add_engagement(n, kind, event(1)));
        }
        if n % 1_013 == 500 {
            assert!(index.remove_customer(&id).is_some());
        }
    }
    index
}
