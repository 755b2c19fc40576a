//! The rule language that docs/rules.md documents is the one the server
//! describes: its variable table and its list of operators are compared
//! with DescribeRuleLanguage, and every difference is named.

use std::collections::BTreeMap;

use segmentd::grpc::pb;

use crate::segments::segmentation;
use crate::support::TestServer;

/// The rule language document.
const RULES: &str = include_str!("../../docs/rules.md");
/// The header row of its variable table.
const TABLE_HEADER: &str = "| variable | type | what it holds | example |";
/// How the paragraph that lists the operators begins.
const OPERATORS_LEAD: &str = "The operators, in the order `DescribeRuleLanguage` lists them:";

/// A variable as the table shows it, or as the server describes it.
#[derive(Debug)]
struct Variable {
    /// `int`, `double`, `string`, `bool`, `enum` or `trait`.
    kind: String,
    /// For an enum, the names it takes, in order.
    enum_values: Vec<String>,
    /// Whether it can be absent.
    optional: bool,
    /// Whether it can be a breakdown dimension.
    dimension: bool,
    /// What it holds.
    description: String,
    /// A rule that uses it.
    example: String,
}

impl Variable {
    /// The server's description of a variable.
    fn described(variable: &pb::RuleVariable) -> Variable {
        Variable {
            kind: variable.r#type.clone(),
            enum_values: variable.enum_values.clone(),
            optional: variable.optional,
            dimension: variable.dimension,
            description: variable.description.clone(),
            example: variable.example.clone(),
        }
    }

    /// The type column: the kind, an enum's values, then whether the
    /// variable is optional and a dimension.
    fn type_cell(&self) -> String {
        let mut cell = self.kind.clone();
        if !self.enum_values.is_empty() {
            let values: Vec<String> = self.enum_values.iter().map(|v| format!("`{v}`")).collect();
            cell += &format!(": {}", values.join(", "));
        }
        if self.optional {
            cell += " (optional)";
        }
        if self.dimension {
            cell += "; dimension";
        }
        cell
    }

    /// The table row that documents the variable `name`.
    fn row(&self, name: &str) -> String {
        let cells = [
            format!("`{name}`"),
            self.type_cell(),
            self.description.clone(),
            format!("`{}`", self.example),
        ];
        let escaped: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
        format!("| {} |", escaped.join(" | "))
    }
}

/// The cells of a table row: split at every `|` not escaped as `\|`.
fn cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            other => cells.last_mut().unwrap().push(other),
        }
    }
    // The row's opening and closing pipes leave an empty cell at each end.
    let inner = cells
        .get(1..cells.len().saturating_sub(1))
        .unwrap_or_default();
    inner.iter().map(|cell| cell.trim().to_owned()).collect()
}

/// The text of a cell written as code: between one pair of backticks.
fn code(cell: &str) -> String {
    cell.strip_prefix('`')
        .and_then(|inner| inner.strip_suffix('`'))
        .unwrap_or(cell)
        .to_owned()
}

/// Reads a type column back: `kind[: values][ (optional)][; dimension]`.
fn parse_type_cell(cell: &str) -> (String, Vec<String>, bool, bool) {
    let (rest, dimension) = match cell.strip_suffix("; dimension") {
        Some(rest) => (rest, true),
        None => (cell, false),
    };
    let (rest, optional) = match rest.strip_suffix(" (optional)") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let Some((kind, values)) = rest.split_once(": ") else {
        return (rest.to_owned(), Vec::new(), optional, dimension);
    };
    let values = values.split(", ").map(code).collect();
    (kind.to_owned(), values, optional, dimension)
}

/// The variable table of `document`, by name, in the order of its rows.
fn documented_variables(document: &str) -> Vec<(String, Variable)> {
    let mut lines = document
        .lines()
        .skip_while(|line| line.trim() != TABLE_HEADER);
    assert!(
        lines.next().is_some(),
        "docs/rules.md has no variable table headed `{TABLE_HEADER}`"
    );
    lines
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells = cells(line);
            assert_eq!(cells.len(), 4, "a row of four cells: {line}");
            let (kind, enum_values, optional, dimension) = parse_type_cell(&cells[1]);
            let variable = Variable {
                kind,
                enum_values,
                optional,
                dimension,
                description: cells[2].clone(),
                example: code(&cells[3]),
            };
            (code(&cells[0]), variable)
        })
        .collect()
}

/// The operators that `document` lists, in its order.
fn documented_operators(document: &str) -> Vec<String> {
    let start = document
        .find(OPERATORS_LEAD)
        .unwrap_or_else(|| panic!("docs/rules.md has no paragraph beginning `{OPERATORS_LEAD}`"));
    let paragraph = &document[start + OPERATORS_LEAD.len()..];
    let paragraph = paragraph.split("\n\n").next().unwrap_or_default();
    paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every way in which `document` differs from the server's description.
fn differences(document: &str, described: &pb::DescribeRuleLanguageResponse) -> Vec<String> {
    let mut differences = Vec::new();
    let documented = documented_variables(document);
    let served: Vec<(String, Variable)> = described
        .variables
        .iter()
        .map(|variable| (variable.name.clone(), Variable::described(variable)))
        .collect();
    let documented_by_name: BTreeMap<&str, &Variable> = documented
        .iter()
        .map(|(name, variable)| (name.as_str(), variable))
        .collect();
    let served_by_name: BTreeMap<&str, &Variable> = served
        .iter()
        .map(|(name, variable)| (name.as_str(), variable))
        .collect();
    for (name, server) in &served {
        let Some(table) = documented_by_name.get(name.as_str()) else {
            differences.push(format!(
                "`{name}` is missing from the table; its row is\n    {}",
                server.row(name)
            ));
            continue;
        };
        let mut fields = Vec::new();
        let mut compare = |field: &str, table: String, server: String| {
            if table != server {
                fields.push(format!(
                    "{field} is {table:?} in the table, {server:?} on the server"
                ));
            }
        };
        compare("the type", table.type_cell(), server.type_cell());
        compare(
            "the description",
            table.description.clone(),
            server.description.clone(),
        );
        compare("the example", table.example.clone(), server.example.clone());
        if !fields.is_empty() {
            differences.push(format!(
                "`{name}`: {}; its row is\n    {}",
                fields.join("; "),
                server.row(name)
            ));
        }
    }
    for (name, _) in &documented {
        if !served_by_name.contains_key(name.as_str()) {
            differences.push(format!(
                "`{name}` is in the table, but the server has no such variable"
            ));
        }
    }
    let table_order: Vec<&str> = documented
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| served_by_name.contains_key(name))
        .collect();
    let server_order: Vec<&str> = served
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| documented_by_name.contains_key(name))
        .collect();
    if table_order != server_order {
        differences.push(format!(
            "the table lists the variables in another order than the server:\n    table:  {table_order:?}\n    server: {server_order:?}"
        ));
    }
    let operators = documented_operators(document);
    if operators != described.operators {
        differences.push(format!(
            "the operators differ:\n    docs/rules.md: {operators:?}\n    server:        {:?}",
            described.operators
        ));
    }
    differences
}

#[tokio::test]
async fn the_rule_language_document_matches_the_server() {
    let server = TestServer::start().await;
    let described = segmentation(&server)
        .await
        .describe_rule_language(pb::DescribeRuleLanguageRequest {})
        .await
        .unwrap()
        .into_inner();
    server.stop().await.unwrap();
    assert!(!described.variables.is_empty() && !described.operators.is_empty());

    let found = differences(RULES, &described);
    assert!(
        found.is_empty(),
        "docs/rules.md differs from DescribeRuleLanguage:\n- {}",
        found.join("\n- ")
    );

    // The comparison sees a changed type, a changed description, a missing
    // row, an unknown variable and a missing operator.
    let row_of = |name: &str| {
        let variable = described
            .variables
            .iter()
            .find(|variable| variable.name == name)
            .unwrap_or_else(|| panic!("the server describes {name}"));
        (
            Variable::described(variable).row(name),
            variable.description.clone(),
        )
    };
    let (relationship_row, _) = row_of("customer.relationship");
    let (age_row, age_description) = row_of("customer.age");
    let (spend_row, _) = row_of("features.total_spend");
    let altered = RULES
        .replace(
            &relationship_row,
            &relationship_row.replacen("; dimension", "", 1),
        )
        .replace(&age_row, &age_row.replace(&age_description, "age"))
        .replace(
            &spend_row,
            "| `features.spend` | double | spend | `features.spend > 1` |",
        )
        .replace("`contains`, ", "");
    let found = differences(&altered, &described);
    assert_eq!(found.len(), 5, "{found:#?}");
    for (difference, expected) in found.iter().zip([
        "`customer.relationship`: the type is".to_owned(),
        "`customer.age`: the description is \"age\" in the table".to_owned(),
        "`features.total_spend` is missing from the table".to_owned(),
        "`features.spend` is in the table, but the server has no such variable".to_owned(),
        "the operators differ".to_owned(),
    ]) {
        assert!(difference.starts_with(&expected), "{difference}");
    }
}
