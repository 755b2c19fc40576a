//! Scopes, and the one table of what each method needs. A method the table
//! does not list is refused, so a new RPC is closed until it gets its row.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

/// A permission a credential can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read customer profiles, their features and activity.
    CustomersRead,
    /// Create, update and import customer profiles.
    CustomersWrite,
    /// Erase customers.
    CustomersErase,
    /// Record and import activity.
    ActivityWrite,
    /// Read segments, preview rules and break customers down.
    SegmentsRead,
    /// Create, update and delete saved segments.
    SegmentsManage,
    /// Read personas and persona assignments.
    PersonasRead,
    /// Replace or reset the persona catalog.
    PersonasManage,
    /// Any stream or list of customer ids, for marketing.
    Export,
    /// Take an online backup.
    AdminBackup,
}

impl Scope {
    /// Whether the methods that need this scope change, erase or export
    /// data: their calls go to the audit log, refused ones too.
    pub fn audited(self) -> bool {
        matches!(
            self,
            Scope::CustomersErase
                | Scope::SegmentsManage
                | Scope::PersonasManage
                | Scope::Export
                | Scope::AdminBackup
        )
    }

    /// Every scope, in the order of its bit in [`Scopes`].
    pub const ALL: [Scope; 10] = [
        Scope::CustomersRead,
        Scope::CustomersWrite,
        Scope::CustomersErase,
        Scope::ActivityWrite,
        Scope::SegmentsRead,
        Scope::SegmentsManage,
        Scope::PersonasRead,
        Scope::PersonasManage,
        Scope::Export,
        Scope::AdminBackup,
    ];

    /// The name in access files, JWT claims and errors.
    pub fn name(self) -> &'static str {
        match self {
            Scope::CustomersRead => "customers.read",
            Scope::CustomersWrite => "customers.write",
            Scope::CustomersErase => "customers.erase",
            Scope::ActivityWrite => "activity.write",
            Scope::SegmentsRead => "segments.read",
            Scope::SegmentsManage => "segments.manage",
            Scope::PersonasRead => "personas.read",
            Scope::PersonasManage => "personas.manage",
            Scope::Export => "export",
            Scope::AdminBackup => "admin.backup",
        }
    }

    /// The scope named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in the set.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }

    /// The set of the known scope names among `names`; others are ignored
    /// (a JWT may carry scopes of other services).
    pub fn known<'a>(names: impl IntoIterator<Item = &'a str>) -> Scopes {
        names.into_iter().filter_map(Scope::parse).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Scopes(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::name)).finish()
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: anyone may call it (health, for probes).
    Open,
    /// Server reflection: open, or any valid credential, as configured.
    Reflection,
    /// A credential that carries this scope.
    Scope(Scope),
}

/// Every method the server serves and what it needs, by gRPC path.
pub const METHODS: &[(&str, Access)] = {
    use Access::{Open, Reflection, Scope as Needs};
    use Scope::*;
    &[
        ("/grpc.health.v1.Health/Check", Open),
        ("/grpc.health.v1.Health/Watch", Open),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Reflection,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Reflection,
        ),
        (
            "/segmentd.v1.CustomerService/GetCustomer",
            Needs(CustomersRead),
        ),
        (
            "/segmentd.v1.CustomerService/ListCustomers",
            Needs(CustomersRead),
        ),
        (
            "/segmentd.v1.CustomerService/GetCustomerFeatures",
            Needs(CustomersRead),
        ),
        (
            "/segmentd.v1.CustomerService/CreateCustomer",
            Needs(CustomersWrite),
        ),
        (
            "/segmentd.v1.CustomerService/UpdateCustomer",
            Needs(CustomersWrite),
        ),
        (
            "/segmentd.v1.CustomerService/ImportCustomers",
            Needs(CustomersWrite),
        ),
        (
            "/segmentd.v1.CustomerService/DeleteCustomer",
            Needs(CustomersErase),
        ),
        (
            "/segmentd.v1.ActivityService/ListPurchases",
            Needs(CustomersRead),
        ),
        (
            "/segmentd.v1.ActivityService/ListEngagements",
            Needs(CustomersRead),
        ),
        (
            "/segmentd.v1.ActivityService/RecordActivity",
            Needs(ActivityWrite),
        ),
        (
            "/segmentd.v1.ActivityService/ImportActivity",
            Needs(ActivityWrite),
        ),
        (
            "/segmentd.v1.SegmentationService/BreakdownCustomers",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.SegmentationService/DescribeRuleLanguage",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.SegmentationService/GetSegment",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.SegmentationService/ListSegments",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.SegmentationService/PreviewSegment",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.SegmentationService/CreateSegment",
            Needs(SegmentsManage),
        ),
        (
            "/segmentd.v1.SegmentationService/UpdateSegment",
            Needs(SegmentsManage),
        ),
        (
            "/segmentd.v1.SegmentationService/DeleteSegment",
            Needs(SegmentsManage),
        ),
        (
            "/segmentd.v1.SegmentationService/ListSegmentMembers",
            Needs(Export),
        ),
        (
            "/segmentd.v1.SegmentationService/ExportSegmentMembers",
            Needs(Export),
        ),
        (
            "/segmentd.v1.PersonaService/GetCustomerPersona",
            Needs(PersonasRead),
        ),
        (
            "/segmentd.v1.PersonaService/ListPersonas",
            Needs(PersonasRead),
        ),
        (
            "/segmentd.v1.PersonaService/BreakdownPersonas",
            Needs(PersonasRead),
        ),
        (
            "/segmentd.v1.PersonaService/ReplacePersonaCatalog",
            Needs(PersonasManage),
        ),
        (
            "/segmentd.v1.PersonaService/ResetPersonaCatalog",
            Needs(PersonasManage),
        ),
        (
            "/segmentd.v1.PersonaService/ExportPersonaAssignments",
            Needs(Export),
        ),
        (
            "/segmentd.v1.MembershipService/WatchSegmentMembership",
            Needs(Export),
        ),
        (
            "/segmentd.v1.MembershipService/WatchPersonaAssignments",
            Needs(Export),
        ),
        (
            "/segmentd.v1.MembershipService/ListCustomerSegments",
            Needs(SegmentsRead),
        ),
        (
            "/segmentd.v1.PredictionService/GetPredictionModel",
            Needs(PersonasRead),
        ),
        (
            "/segmentd.v1.PredictionService/RefitPredictionModel",
            Needs(PersonasManage),
        ),
        (
            "/segmentd.v1.PredictionService/ValidatePredictionModel",
            Needs(PersonasManage),
        ),
        ("/segmentd.v1.AdminService/BackupStore", Needs(AdminBackup)),
    ]
};

/// [`METHODS`] by path.
static BY_PATH: LazyLock<HashMap<&'static str, Access>> =
    LazyLock::new(|| METHODS.iter().copied().collect());

/// What the method at gRPC `path` needs; `None` for a method the table
/// does not list.
pub fn access(path: &str) -> Option<Access> {
    BY_PATH.get(path).copied()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message as _;

    use super::*;
    use crate::grpc::pb;

    /// The gRPC paths of every method described in `descriptor_set`.
    fn described(descriptor_set: &[u8]) -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(descriptor_set).unwrap();
        let mut paths = BTreeSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        paths
    }

    #[test]
    fn every_api_method_needs_a_scope() {
        let unlisted: Vec<_> = described(pb::FILE_DESCRIPTOR_SET)
            .into_iter()
            .filter(|path| !matches!(access(path), Some(Access::Scope(_))))
            .collect();
        assert!(unlisted.is_empty(), "methods without a scope: {unlisted:?}");
    }

    #[test]
    fn every_row_names_a_served_method_once() {
        let served: BTreeSet<String> = [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .flat_map(described)
        .collect();
        for (path, _) in METHODS {
            assert!(served.contains(*path), "{path} is served by no service");
        }
        assert_eq!(BY_PATH.len(), METHODS.len(), "a method is listed twice");
    }

    #[test]
    fn health_is_open_and_reflection_configurable() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Some(Access::Open));
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Access::Reflection)
        );
        assert_eq!(access("/segmentd.v1.Nothing/Here"), None);
    }

    #[test]
    fn scope_names_round_trip_and_sets_hold_them() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.name()), Some(scope));
        }
        let scopes = Scopes::known(["export", "openid", "customers.read"]);
        assert!(scopes.contains(Scope::Export));
        assert!(scopes.contains(Scope::CustomersRead));
        assert!(!scopes.contains(Scope::CustomersErase));
        assert_eq!(format!("{scopes:?}"), r#"{"customers.read", "export"}"#);
    }
}
