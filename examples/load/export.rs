//! The data set as CSV files, without a server, for other engines to load
//! (see `bench/compare.sh`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use segmentd::grpc::pb;

use crate::data::{customer_id, DataSet};

/// An enum's name without its prefix: `GENDER_FEMALE` → `FEMALE`.
fn short_name<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// A new CSV file in `dir`, its header written.
fn create_csv(dir: &Path, name: &str, header: &str) -> anyhow::Result<BufWriter<File>> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(dir.join(name))?);
    writeln!(file, "{header}")?;
    Ok(file)
}

/// Writes the data set as CSV files: customers.csv, purchases.csv and
/// engagements.csv. Times are seconds since the epoch, money is in minor
/// units, enums are their names without the prefix (`FEMALE`, `EXTERNAL`),
/// and a birth date is YYYY-MM-DD.
pub fn export(dir: &Path, data: &DataSet) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;

    let mut file = create_csv(
        dir,
        "customers.csv",
        "customer_id,party,relationship,department,birth_date,gender,annual_income_minor,\
         currency_code,country,city,language,consent_email,objects_to_profiling",
    )?;
    for c in data.customers() {
        let id = c.name.strip_prefix("customers/").unwrap_or(&c.name);
        let party = pb::Party::try_from(c.party).unwrap_or_default();
        let relationship = pb::Relationship::try_from(c.relationship).unwrap_or_default();
        let gender = pb::Gender::try_from(c.gender).unwrap_or_default();
        let email =
            pb::ConsentStatus::try_from(c.consent.unwrap_or_default().email).unwrap_or_default();
        let birth = c
            .birth_date
            .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
            .unwrap_or_default();
        let (income, currency) = c
            .annual_income
            .map(|m| (m.minor_units.to_string(), m.currency_code))
            .unwrap_or_default();
        let location = c.location.unwrap_or_default();
        writeln!(
            file,
            "{id},{},{},{},{birth},{},{income},{currency},{},{},{},{},{}",
            short_name(party.as_str_name(), "PARTY_"),
            short_name(relationship.as_str_name(), "RELATIONSHIP_"),
            c.department,
            short_name(gender.as_str_name(), "GENDER_"),
            location.country_code,
            location.city,
            c.language,
            short_name(email.as_str_name(), "CONSENT_STATUS_"),
            c.objects_to_profiling,
        )?;
    }
    file.flush()?;

    let mut file = create_csv(
        dir,
        "purchases.csv",
        "purchase_id,customer_id,occurred_at,amount_minor,currency_code,quantity,category,durability",
    )?;
    let mut purchases = 0u64;
    for p in data.purchases() {
        writeln!(
            file,
            "p{},{},{},{},USD,{},{},{}",
            p.n,
            customer_id(u64::from(p.customer)),
            p.occurred_at,
            p.amount_minor,
            p.quantity,
            p.category,
            short_name(p.durability.as_str_name(), "PRODUCT_DURABILITY_"),
        )?;
        purchases += 1;
    }
    file.flush()?;

    let mut file = create_csv(
        dir,
        "engagements.csv",
        "event_id,customer_id,occurred_at,type,nps_score,channel",
    )?;
    let engagements = data.engagements();
    for e in &engagements {
        writeln!(
            file,
            "e{},{},{},{},{},{}",
            e.n,
            customer_id(u64::from(e.customer)),
            e.occurred_at,
            short_name(e.kind.as_str_name(), "ENGAGEMENT_TYPE_"),
            e.nps_score.map(|s| s.to_string()).unwrap_or_default(),
            e.channel,
        )?;
    }
    file.flush()?;
    println!(
        "| export to CSV | | {} customers, {purchases} purchases, {} engagement events in {:.1} s |",
        data.customers,
        engagements.len(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}
