//! `segmentd.v1.CustomerService`: check and convert the request, call the
//! engine, map the result.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    customer_to_proto, features_to_proto, implied_fields, profile_from_proto, timestamp_from_proto,
    ProfileRules,
};
use super::pb::customer_service_server::CustomerService;
use super::pb::{self};
use super::status::{from_stream_error, to_status};
use super::{finish_import, ready, ApiLimits, EngineSlot};
use crate::domain::{update, CustomerId, Error, ProfileField, Timestamp, Violations};
use crate::engine::{compile_filter, CustomerUpdate, Engine, ImportCounts};

/// The default page size of List calls (AIP-158).
const DEFAULT_PAGE_SIZE: usize = 50;
/// Marks page tokens of this format, so that a future format can tell them apart.
const PAGE_TOKEN_VERSION: &str = "c1:";

/// The CustomerService handlers.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl CustomerApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        CustomerApi { engine, limits }
    }
}

fn rules(engine: &Engine) -> ProfileRules {
    ProfileRules {
        currency: engine.settings().reporting_currency,
        today: Timestamp::now().date(),
    }
}

fn parse_name(field: &str, name: &str) -> Result<CustomerId, Status> {
    CustomerId::from_name(name).map_err(|description| to_status(Error::invalid(field, description)))
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Checks `page_size` against the default and the cap.
pub fn page_size(requested: i32, limits: ApiLimits) -> Result<usize, Error> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::invalid(
            "page_size",
            format!("must not be negative, got {requested}"),
        )),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE.min(limits.max_page_size)),
        Ok(size) if size > limits.max_page_size => Err(Error::ResourceExhausted {
            subject: "page_size".into(),
            description: format!("at most {} per page, got {size}", limits.max_page_size),
        }),
        Ok(size) => Ok(size),
    }
}

fn encode_page_token(last: &CustomerId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_VERSION}{last}"))
}

fn decode_page_token(token: &str) -> Result<Option<CustomerId>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(
            "page_token",
            "not a page token from a previous ListCustomers response",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let id = text.strip_prefix(PAGE_TOKEN_VERSION).ok_or_else(invalid)?;
    CustomerId::parse(id).map(Some).map_err(|_| invalid())
}

/// Marks page tokens of filtered lists, which also keep the evaluation time.
const FILTERED_TOKEN_VERSION: &str = "f1:";

/// ListCustomers with a filter: the engine selects the ids from the index,
/// the page is read from the store.
async fn list_filtered(
    engine: &Engine,
    request: pb::ListCustomersRequest,
    page_size: usize,
) -> Result<Response<pb::ListCustomersResponse>, Status> {
    let mut violations = Violations::default();
    let rule = violations.check("filter", compile_filter(&request.filter));
    let requested = match &request.evaluation_time {
        Some(time) => violations.check("evaluation_time", timestamp_from_proto(time)),
        None => Some(Timestamp::now()),
    };
    let rule = violations.into_result(rule).map_err(to_status)?;
    let (Some(rule), Some(requested)) = (rule, requested) else {
        return Err(to_status(Error::internal("checked fields missing")));
    };
    let invalid = || {
        to_status(Error::invalid(
            "page_token",
            "not a page token from a previous ListCustomers response with this filter",
        ))
    };
    let (at, after) = if request.page_token.is_empty() {
        (requested, None)
    } else {
        let bytes = URL_SAFE_NO_PAD
            .decode(&request.page_token)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let rest = text
            .strip_prefix(FILTERED_TOKEN_VERSION)
            .ok_or_else(invalid)?;
        let (nanos, last) = rest.split_once(':').ok_or_else(invalid)?;
        let nanos: i64 = nanos.parse().map_err(|_| invalid())?;
        (Timestamp::from_nanos(nanos), Some(last.to_owned()))
    };
    let (ids, more) = engine
        .filter_customers(rule, at, after, page_size)
        .await
        .map_err(to_status)?;
    let mut customers = Vec::with_capacity(ids.len());
    for id in &ids {
        let id = CustomerId::parse(id).map_err(|error| to_status(Error::internal(error)))?;
        // A customer deleted since the index was read is left out.
        match engine.get_customer(&id) {
            Ok(customer) => customers.push(customer_to_proto(&customer)),
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(to_status(error)),
        }
    }
    let next_page_token = match ids.last() {
        Some(last) if more => {
            URL_SAFE_NO_PAD.encode(format!("{FILTERED_TOKEN_VERSION}{}:{last}", at.as_nanos()))
        }
        _ => String::new(),
    };
    Ok(Response::new(pb::ListCustomersResponse {
        customers,
        next_page_token,
    }))
}

fn check_batch_size(count: usize, limits: ApiLimits) -> Result<(), Error> {
    if count > limits.max_batch_size {
        return Err(Error::ResourceExhausted {
            subject: "customers".into(),
            description: format!(
                "at most {} customers per message, got {count}",
                limits.max_batch_size
            ),
        });
    }
    Ok(())
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("customer_id", CustomerId::parse(&request.customer_id));
        let request_id = optional(request.request_id);
        if let Some(request_id) = &request_id {
            violations.check(
                "request_id",
                uuid::Uuid::try_parse(request_id)
                    .map_err(|_| format!("expected a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6, got {request_id:?}")),
            );
        }
        let profile = match &request.customer {
            Some(customer) => {
                profile_from_proto(customer, "customer.", &rules(&engine), &mut violations)
            }
            None => {
                violations.add("customer", "required");
                Default::default()
            }
        };
        let id = violations
            .into_result(id)
            .map_err(to_status)?
            .ok_or_else(|| to_status(Error::internal("customer id missing without a violation")))?;
        let customer = engine
            .create_customer(id, profile, request_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(customer_to_proto(&customer)))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let id = parse_name("name", &request.into_inner().name)?;
        let customer = engine.get_customer(&id).map_err(to_status)?;
        Ok(Response::new(customer_to_proto(&customer)))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let Some(customer) = request.customer else {
            return Err(to_status(Error::invalid("customer", "required")));
        };
        let id = parse_name("customer.name", &customer.name)?;
        let mut violations = Violations::default();
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let fields: Vec<ProfileField> = match paths.as_slice() {
            [] => implied_fields(&customer),
            [star] if star == "*" => update::ALL.to_vec(),
            paths => paths
                .iter()
                .enumerate()
                .filter_map(|(index, path)| {
                    violations
                        .check(
                            format!("update_mask.paths[{index}]"),
                            ProfileField::parse(path),
                        )
                        .flatten()
                })
                .collect(),
        };
        let mut profile_violations = Violations::default();
        let profile = profile_from_proto(
            &customer,
            "customer.",
            &rules(&engine),
            &mut profile_violations,
        );
        // Only the fields being changed have to be valid.
        profile_violations.retain(|violation| {
            let path = violation
                .field
                .strip_prefix("customer.")
                .unwrap_or(&violation.field);
            fields.iter().any(|field| field.covers(path))
        });
        violations.extend(profile_violations);
        violations.into_result(()).map_err(to_status)?;
        let updated = engine
            .update_customer(CustomerUpdate {
                id,
                profile,
                fields,
                etag: optional(customer.etag),
                allow_missing: request.allow_missing,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(customer_to_proto(&updated)))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<()>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = parse_name("name", &request.name)?;
        engine
            .delete_customer(&id, optional(request.etag).as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let page_size = page_size(request.page_size, self.limits).map_err(to_status)?;
        if !request.filter.trim().is_empty() || request.evaluation_time.is_some() {
            return list_filtered(&engine, request, page_size).await;
        }
        let after = decode_page_token(&request.page_token).map_err(to_status)?;
        let page = engine
            .list_customers(after, page_size)
            .await
            .map_err(to_status)?;
        let next_page_token = match page.customers.last() {
            Some(last) if page.more => encode_page_token(&last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListCustomersResponse {
            customers: page.customers.iter().map(customer_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_customer_features(
        &self,
        request: Request<pb::GetCustomerFeaturesRequest>,
    ) -> Result<Response<pb::CustomerFeatures>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("name", CustomerId::from_name(&request.name));
        let at = match &request.evaluation_time {
            Some(time) => violations.check("evaluation_time", timestamp_from_proto(time)),
            None => Some(Timestamp::now()),
        };
        violations.into_result(()).map_err(to_status)?;
        let (Some(id), Some(at)) = (id, at) else {
            return Err(to_status(Error::internal("checked fields missing")));
        };
        let features = engine.customer_features(id, at).await.map_err(to_status)?;
        Ok(Response::new(features_to_proto(
            &features,
            engine.settings().reporting_currency,
        )))
    }

    async fn import_customers(
        &self,
        request: Request<Streaming<pb::ImportCustomersRequest>>,
    ) -> Result<Response<pb::ImportCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let mut stream = request.into_inner();
        let mut totals = ImportCounts::default();
        let mut batches: u64 = 0;
        let outcome: Result<(), Status> = async {
            while let Some(message) = stream.message().await.map_err(from_stream_error)? {
                check_batch_size(message.customers.len(), self.limits).map_err(to_status)?;
                let rules = rules(&engine);
                let mut violations = Violations::default();
                let mut batch = Vec::with_capacity(message.customers.len());
                for (index, customer) in message.customers.iter().enumerate() {
                    let prefix = format!("customers[{index}].");
                    let id = violations.check(
                        format!("{prefix}name"),
                        CustomerId::from_name(&customer.name),
                    );
                    let profile = profile_from_proto(customer, &prefix, &rules, &mut violations);
                    if let Some(id) = id {
                        batch.push((id, profile));
                    }
                }
                violations.into_result(()).map_err(to_status)?;
                let counts = engine.import_customers(batch).await.map_err(to_status)?;
                totals.created += counts.created;
                totals.updated += counts.updated;
                batches += 1;
            }
            Ok(())
        }
        .await;
        let response = pb::ImportCustomersResponse {
            created_count: totals.created as i64,
            updated_count: totals.updated as i64,
            batch_count: batches as i64,
        };
        let applied = format!("{} customers", totals.created + totals.updated);
        finish_import(&engine, outcome.map(|()| response), batches, &applied).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let id = CustomerId::parse("a:b@c").unwrap();
        assert_eq!(
            decode_page_token(&encode_page_token(&id)).unwrap(),
            Some(id)
        );
        assert_eq!(decode_page_token("").unwrap(), None);
        assert!(decode_page_token("!!!").is_err());
        assert!(decode_page_token(&URL_SAFE_NO_PAD.encode("x1:abc")).is_err());
    }

    #[test]
    fn page_sizes() {
        let limits = ApiLimits {
            max_page_size: 1000,
            max_batch_size: 1000,
            max_events_per_batch: 10_000,
        };
        assert_eq!(page_size(0, limits).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(1000, limits).unwrap(), 1000);
        assert!(matches!(
            page_size(1001, limits),
            Err(Error::ResourceExhausted { .. })
        ));
        assert!(matches!(
            page_size(-1, limits),
            Err(Error::InvalidArgument(_))
        ));
    }
}
