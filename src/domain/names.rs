//! The names enums take in rules, breakdowns and exports: upper case, as in
//! the API's enums without their prefix (`FREQUENT_CUSTOMER`, `25_34`).

use super::customer::{ConsentStatus, Gender, Party, Relationship};
use super::features::{
    AgeBand, EngagementStage, FrequencyClass, IncomeBand, PAliveBand, RfmSegment,
};

macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The name of each value, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The value's name.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }

            /// The value of a name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// The value's position in [`Self::ALL`].
            pub fn ordinal(self) -> u8 {
                self as u8
            }
        }
    };
}

names!(Party { Individual => "INDIVIDUAL", Business => "BUSINESS" });
names!(Relationship { External => "EXTERNAL", Internal => "INTERNAL" });
names!(Gender {
    Unspecified => "UNSPECIFIED",
    Female => "FEMALE",
    Male => "MALE",
    Other => "OTHER",
});
names!(ConsentStatus { Unknown => "UNKNOWN", Granted => "GRANTED", Denied => "DENIED" });
names!(AgeBand {
    Unknown => "UNKNOWN",
    Under18 => "UNDER_18",
    From18To24 => "18_24",
    From25To34 => "25_34",
    From35To44 => "35_44",
    From45To54 => "45_54",
    From55To64 => "55_64",
    From65 => "65_PLUS",
});
names!(IncomeBand {
    Unknown => "UNKNOWN",
    Low => "LOW",
    Middle => "MIDDLE",
    High => "HIGH",
    VeryHigh => "VERY_HIGH",
});
names!(FrequencyClass {
    None => "NONE",
    OneTimeBuyer => "ONE_TIME_BUYER",
    Lapsed => "LAPSED",
    FrequentCustomer => "FREQUENT_CUSTOMER",
    RepeatCustomer => "REPEAT_CUSTOMER",
});
names!(EngagementStage {
    TotalMarket => "TOTAL_MARKET",
    JustLooking => "JUST_LOOKING",
    JustBuying => "JUST_BUYING",
    Rebuying => "REBUYING",
    GivingFeedback => "GIVING_FEEDBACK",
    TellingOthers => "TELLING_OTHERS",
});
names!(PAliveBand {
    Under25 => "0_25",
    From25To50 => "25_50",
    From50To75 => "50_75",
    From75 => "75_100",
});
names!(RfmSegment {
    Champions => "CHAMPIONS",
    Loyal => "LOYAL",
    PotentialLoyalist => "POTENTIAL_LOYALIST",
    NewCustomers => "NEW_CUSTOMERS",
    Promising => "PROMISING",
    NeedAttention => "NEED_ATTENTION",
    AboutToSleep => "ABOUT_TO_SLEEP",
    CantLoseThem => "CANT_LOSE_THEM",
    AtRisk => "AT_RISK",
    Hibernating => "HIBERNATING",
    Lost => "LOST",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_follow_the_lists() {
        for (i, value) in FrequencyClass::ALL.iter().enumerate() {
            assert_eq!(value.ordinal() as usize, i);
            assert_eq!(FrequencyClass::from_name(value.name()), Some(*value));
        }
        assert_eq!(RfmSegment::ALL.len(), RfmSegment::NAMES.len());
        assert_eq!(AgeBand::From65.name(), "65_PLUS");
    }
}
