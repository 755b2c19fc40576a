//! Compiles CEL text into a [`Predicate`].
//!
//! Three steps, each of which may refuse the rule with a [`CompileError`]:
//!
//! 1. [`scan`] checks the size and the bracket nesting before the parser
//!    sees the text.
//! 2. [`parse`] runs the `cel` crate's parser, on a thread of its own with a
//!    known stack (see [`super::scan`] for why).
//! 3. [`Compiler`] walks the AST: it resolves the variables, types the
//!    literals by the variable they are compared with, and refuses every
//!    other construct, naming what it found and what is supported (the
//!    refusals are in `refusals`).
//!
//! Positions are character offsets (not bytes) from the start of the rule.

use cel::common::ast::{operators, CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};

use super::error::{char_position, clip, CompileError};
use super::scan::{parse, scan, MAX_NESTING, PARSER_STACK_BYTES};
use super::variables::{
    display_name, optional_names, resolve_dotted, row, trait_key, Type, Variable,
};
use super::{Comparison, Literal, Predicate, StringTest};
use crate::domain::customer::parse_country_code;

/// The constructs a rule may use, as documented.
const OPERATORS: &[&str] = &[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "in",
    "startsWith",
    "endsWith",
    "contains",
    "has()",
];

/// Compiles a rule.
///
/// This blocks while a thread of its own, with a large stack, parses the
/// rule: about a millisecond for a typical rule in a debug build.
pub fn compile(source: &str) -> Result<Predicate, CompileError> {
    scan(source)?;
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("rule-compiler".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse_and_compile(source));
        match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(CompileError::at(0, "the rule could not be parsed"))),
            Err(error) => Err(CompileError::at(
                0,
                format!("the rule compiler could not start: {error}"),
            )),
        }
    })
}

/// The constructs a rule may use: comparisons, logic, `in`, the string
/// tests and `has()`.
pub fn operators() -> Vec<&'static str> {
    OPERATORS.to_vec()
}

/// "==, !=, ... contains and has()".
fn supported_list() -> String {
    let operators = operators();
    match operators.split_last() {
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses and compiles, on the compiler's thread.
fn parse_and_compile(source: &str) -> Result<Predicate, CompileError> {
    let (expr, info) = parse(source)?;
    Compiler {
        source,
        info: &info,
    }
    .condition(&expr, 0)
}

/// A literal as written, before it takes the type of its variable.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Int(i64),
    Double(f64),
    String(String),
    Bool(bool),
    Null,
    Bytes,
}

impl Raw {
    /// "the int 5", for messages.
    fn describe(&self) -> String {
        match self {
            Raw::Int(value) => format!("the int {value}"),
            Raw::Double(value) => format!("the double {value:?}"),
            Raw::String(value) => format!("the string {:?}", clip(value)),
            Raw::Bool(value) => format!("the bool {value}"),
            Raw::Null => "null".to_owned(),
            Raw::Bytes => "a bytes literal".to_owned(),
        }
    }
}

/// One side of a comparison.
enum Operand {
    /// A variable, and where its name starts.
    Variable(Variable, usize),
    /// A literal, and where it is.
    Literal(Raw, usize),
    /// Anything else.
    Other,
}

/// Walks one parsed rule.
struct Compiler<'a> {
    source: &'a str,
    info: &'a SourceInfo,
}

impl Compiler<'_> {
    /// The character position of a node.
    fn at(&self, id: u64) -> usize {
        self.info
            .offset_for(id)
            .map(|(start, _)| char_position(self.source, start as usize))
            .unwrap_or(0)
    }

    /// The character position of the name of a call, whose node sits at
    /// its opening parenthesis: `startsWith` in `x.startsWith("a")`.
    fn name_at(&self, id: u64) -> (usize, &str) {
        let Some((paren, _)) = self.info.offset_for(id) else {
            return (0, "");
        };
        let bytes = self.source.as_bytes();
        let mut end = (paren as usize).min(bytes.len());
        while end > 0 && bytes[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let name = self.source.get(start..end).unwrap_or("");
        (char_position(self.source, start), name)
    }

    fn error(&self, position: usize, message: impl Into<String>) -> CompileError {
        CompileError::at(position, message)
    }

    /// A rule, or an operand of `&&`, `||` or `!`.
    fn condition(&self, expr: &IdedExpr, depth: usize) -> Result<Predicate, CompileError> {
        if depth > MAX_NESTING {
            return Err(self.error(
                self.at(expr.id),
                format!("the rule nests conditions more than {MAX_NESTING} levels deep"),
            ));
        }
        match &expr.expr {
            Expr::Literal(LiteralValue::Boolean(value)) => Ok(Predicate::Const(*value.inner())),
            Expr::Literal(_) => {
                let found = match self.operand(expr)? {
                    Operand::Literal(raw, _) => raw.describe(),
                    Operand::Variable(..) | Operand::Other => "a literal".to_owned(),
                };
                Err(self.error(
                    self.at(expr.id),
                    format!(
                        "a rule is a condition that is true or false, but this is {found} on its own; compare a variable with it, as in features.purchase_count > 0"
                    ),
                ))
            }
            Expr::Select(select) if select.test => self.has(expr, select),
            Expr::Ident(_) | Expr::Select(_) => self.bare(expr),
            Expr::Call(call) => {
                let unary = call.target.is_none() && call.args.len() == 1;
                let binary = call.target.is_none() && call.args.len() == 2;
                match call.func_name.as_str() {
                    operators::LOGICAL_AND if binary => Ok(Predicate::And(self.junction(
                        expr,
                        operators::LOGICAL_AND,
                        depth,
                    )?)),
                    operators::LOGICAL_OR if binary => Ok(Predicate::Or(self.junction(
                        expr,
                        operators::LOGICAL_OR,
                        depth,
                    )?)),
                    operators::LOGICAL_NOT if unary => Ok(Predicate::Not(Box::new(
                        self.condition(&call.args[0], depth + 1)?,
                    ))),
                    operators::IN if binary => self.membership(expr, call),
                    operators::INDEX if binary => self.bare(expr),
                    name if binary => match comparison(name) {
                        Some(op) => self.compare(expr, call, op),
                        None => Err(self.unsupported(expr)),
                    },
                    name => match (string_test(name), &call.target) {
                        (Some(test), Some(target)) => self.text(expr, call, target, test),
                        _ => Err(self.unsupported(expr)),
                    },
                }
            }
            Expr::Comprehension(_)
            | Expr::List(_)
            | Expr::Map(_)
            | Expr::Struct(_)
            | Expr::Unspecified => Err(self.unsupported(expr)),
        }
    }

    /// The operands of a chain of `&&` (or of `||`), flattened, in order.
    fn junction(
        &self,
        expr: &IdedExpr,
        function: &str,
        depth: usize,
    ) -> Result<Vec<Predicate>, CompileError> {
        let mut operands = Vec::new();
        let mut pending = vec![expr];
        while let Some(node) = pending.pop() {
            match &node.expr {
                Expr::Call(call) if call.func_name == function && call.target.is_none() => {
                    pending.extend(call.args.iter().rev());
                }
                _ => operands.push(self.condition(node, depth + 1)?),
            }
        }
        Ok(operands)
    }

    /// A variable on its own: a bool, or a trait that must be `true`.
    fn bare(&self, expr: &IdedExpr) -> Result<Predicate, CompileError> {
        let (variable, position) = self.variable(expr)?;
        let spec = row(&variable);
        match spec.ty {
            Type::Bool | Type::Trait => Ok(Predicate::IsTrue(variable)),
            ty => Err(self.error(
                position,
                format!(
                    "`{}` is {}, not a condition; use it in a comparison, as in {}",
                    spec.name,
                    ty.with_article(),
                    spec.example
                ),
            )),
        }
    }

    /// `has(customer.age)`.
    fn has(&self, expr: &IdedExpr, select: &SelectExpr) -> Result<Predicate, CompileError> {
        let Some((operand, root)) = dotted_name(&select.operand) else {
            return Err(self.error(
                self.name_at(expr.id).0,
                "has() takes a variable, as in has(customer.age) or has(customer.traits.tier)",
            ));
        };
        let position = self.at(root);
        let name = format!("{operand}.{}", select.field);
        let variable = resolve_dotted(&name).map_err(|message| self.error(position, message))?;
        if !row(&variable).optional {
            let optional = optional_names();
            return Err(self.error(
                position,
                format!(
                    "`{name}` is never absent, so has() would always be true; has() applies to {}",
                    optional.join(", ")
                ),
            ));
        }
        Ok(Predicate::Has(variable))
    }

    /// `variable op literal`, or `literal op variable` turned around.
    fn compare(
        &self,
        expr: &IdedExpr,
        call: &CallExpr,
        op: Comparison,
    ) -> Result<Predicate, CompileError> {
        let [left, right] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        let op_position = self.at(expr.id);
        let (variable, raw, raw_position, op) = match (self.operand(left)?, self.operand(right)?) {
            (Operand::Variable(variable, _), Operand::Literal(raw, at)) => (variable, raw, at, op),
            (Operand::Literal(raw, at), Operand::Variable(variable, _)) => {
                (variable, raw, at, flipped(op))
            }
            (Operand::Variable(..), Operand::Variable(_, at)) => {
                return Err(self.error(
                    at,
                    "comparing two variables is not supported; compare a variable with a literal, as in features.purchases_90d > 2",
                ));
            }
            (Operand::Literal(..), Operand::Literal(..)) => {
                return Err(self.error(
                    op_position,
                    "both sides of this comparison are literals; one side must be a variable, as in features.purchases_90d > 2",
                ));
            }
            (Operand::Other, _) => return Err(self.unsupported_operand(left)),
            (_, Operand::Other) => return Err(self.unsupported_operand(right)),
        };
        let spec = row(&variable);
        let ordering = !matches!(op, Comparison::Eq | Comparison::Ne);
        if ordering {
            let orderable = spec.ty.is_number()
                || (spec.ty == Type::Trait && matches!(raw, Raw::Int(_) | Raw::Double(_)));
            if !orderable {
                let name = display_name(&variable);
                let advice = match spec.ty {
                    Type::String => {
                        "compare it with == or != or test it with startsWith, endsWith or contains"
                            .to_owned()
                    }
                    Type::Enum(_) => {
                        format!("list the values you want with in, as in {}", spec.example)
                    }
                    Type::Trait => {
                        format!("compare it with a number to order it, as in {name} > 3")
                    }
                    Type::Bool | Type::Int | Type::Double => "compare it with == or !=".to_owned(),
                };
                let what = if spec.ty == Type::Trait {
                    format!("{name} is compared with {}", raw.describe())
                } else {
                    format!("`{name}` is {}", spec.ty.with_article())
                };
                return Err(self.error(
                    op_position,
                    format!("<, <=, > and >= order numbers, but {what}; {advice}"),
                ));
            }
        }
        let literal = self.typed(&variable, raw, raw_position)?;
        Ok(Predicate::Compare(variable, op, literal))
    }

    /// `variable in [literals]`, or `"key" in customer.traits`.
    fn membership(&self, expr: &IdedExpr, call: &CallExpr) -> Result<Predicate, CompileError> {
        let [left, right] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        if let Some((name, _)) = dotted_name(right).filter(|(name, _)| name == "customer.traits") {
            let Expr::Literal(LiteralValue::String(key)) = &left.expr else {
                return Err(self.error(
                    self.name_position(left),
                    format!(r#"the left of `in {name}` is a trait key in quotes, as in "tier" in customer.traits"#),
                ));
            };
            let key =
                trait_key(key.inner()).map_err(|message| self.error(self.at(left.id), message))?;
            return Ok(Predicate::Has(Variable::Trait(key)));
        }
        let variable = match self.operand(left)? {
            Operand::Variable(variable, _) => variable,
            Operand::Literal(..) => {
                return Err(self.error(
                    self.at(left.id),
                    r#"`in` takes a variable on its left and a list on its right, as in features.stage in ["REBUYING", "JUST_BUYING"]; to test for a trait write "tier" in customer.traits"#,
                ));
            }
            Operand::Other => return Err(self.unsupported_operand(left)),
        };
        let Expr::List(list) = &right.expr else {
            return Err(self.error(
                self.name_position(right),
                format!(
                    r#"the right of `in` must be a list of values in [ ], as in {} in [...]; found {}"#,
                    display_name(&variable),
                    self.describe(right)
                ),
            ));
        };
        if list.elements.is_empty() {
            return Err(self.error(
                self.at(right.id),
                "the list after `in` is empty, so the condition could never hold; list at least one value",
            ));
        }
        let mut literals = Vec::with_capacity(list.elements.len());
        for element in &list.elements {
            match self.operand(element)? {
                Operand::Literal(raw, at) => literals.push(self.typed(&variable, raw, at)?),
                Operand::Variable(_, at) => {
                    return Err(self.error(
                        at,
                        r#"the list after `in` holds only literal values, such as "TR" or 3, not variables"#,
                    ));
                }
                Operand::Other => return Err(self.unsupported_operand(element)),
            }
        }
        Ok(Predicate::In(variable, literals))
    }

    /// `variable.startsWith("text")` and the other string tests.
    fn text(
        &self,
        expr: &IdedExpr,
        call: &CallExpr,
        target: &IdedExpr,
        test: StringTest,
    ) -> Result<Predicate, CompileError> {
        let (method_position, method) = self.name_at(expr.id);
        let variable = match self.operand(target)? {
            Operand::Variable(variable, _) => variable,
            Operand::Literal(..) => {
                return Err(self.error(
                    self.at(target.id),
                    format!(r#"`{method}` applies to a string variable, as in customer.city.{method}("Is")"#),
                ));
            }
            Operand::Other => return Err(self.unsupported_operand(target)),
        };
        let spec = row(&variable);
        if !matches!(spec.ty, Type::String | Type::Trait) {
            return Err(self.error(
                method_position,
                format!(
                    "`{method}` applies to strings, but `{}` is {}; use it as in {}",
                    spec.name,
                    spec.ty.with_article(),
                    spec.example
                ),
            ));
        }
        let argument = match call.args.as_slice() {
            [argument] => argument,
            _ => {
                return Err(self.error(
                    method_position,
                    format!(r#"`{method}` takes one string, as in customer.city.{method}("Is")"#),
                ));
            }
        };
        let Expr::Literal(LiteralValue::String(text)) = &argument.expr else {
            return Err(self.error(
                self.name_position(argument),
                format!(r#"the argument of `{method}` must be a string in quotes, as in customer.city.{method}("Is")"#),
            ));
        };
        Ok(Predicate::Text(variable, test, text.inner().to_owned()))
    }

    /// Classifies one side of a comparison or an element of a list.
    fn operand(&self, expr: &IdedExpr) -> Result<Operand, CompileError> {
        let at = self.at(expr.id);
        let raw = match &expr.expr {
            Expr::Ident(_) | Expr::Select(SelectExpr { test: false, .. }) => {
                if dotted_name(expr).is_none() {
                    return Ok(Operand::Other);
                }
                let (variable, position) = self.variable(expr)?;
                return Ok(Operand::Variable(variable, position));
            }
            Expr::Call(call) if call.func_name == operators::INDEX && call.args.len() == 2 => {
                let (variable, position) = self.variable(expr)?;
                return Ok(Operand::Variable(variable, position));
            }
            Expr::Call(call)
                if call.func_name == operators::NEGATE
                    && call.target.is_none()
                    && call.args.len() == 1 =>
            {
                return match self.operand(&call.args[0])? {
                    Operand::Literal(Raw::Int(value), _) => match value.checked_neg() {
                        Some(negated) => Ok(Operand::Literal(Raw::Int(negated), at)),
                        None => Err(self.error(at, format!("-({value}) is out of the int range"))),
                    },
                    Operand::Literal(Raw::Double(value), _) => {
                        Ok(Operand::Literal(Raw::Double(-value), at))
                    }
                    Operand::Literal(..) | Operand::Variable(..) | Operand::Other => {
                        Ok(Operand::Other)
                    }
                };
            }
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(value) => Raw::Bool(*value.inner()),
                LiteralValue::Int(value) => Raw::Int(*value.inner()),
                LiteralValue::UInt(value) => match i64::try_from(*value.inner()) {
                    Ok(value) => Raw::Int(value),
                    Err(_) => {
                        return Err(
                            self.error(at, format!("{}u is out of the int range", value.inner()))
                        );
                    }
                },
                LiteralValue::Double(value) => Raw::Double(*value.inner()),
                LiteralValue::String(value) => Raw::String(value.inner().to_owned()),
                LiteralValue::Null => Raw::Null,
                LiteralValue::Bytes(_) => Raw::Bytes,
            },
            _ => return Ok(Operand::Other),
        };
        Ok(Operand::Literal(raw, at))
    }

    /// Resolves a variable reference: a dotted name or `customer.traits[...]`.
    fn variable(&self, expr: &IdedExpr) -> Result<(Variable, usize), CompileError> {
        if let Some((name, root)) = dotted_name(expr) {
            let position = self.at(root);
            return resolve_dotted(&name)
                .map(|variable| (variable, position))
                .map_err(|message| self.error(position, message));
        }
        let Expr::Call(call) = &expr.expr else {
            return Err(self.unsupported(expr));
        };
        let [target, key] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        match dotted_name(target) {
            Some((name, root)) if name == "customer.traits" => {
                let position = self.at(root);
                let Expr::Literal(LiteralValue::String(key_text)) = &key.expr else {
                    return Err(self.error(
                        self.name_position(key),
                        format!(r#"a trait key is a string in quotes, as in customer.traits["tier"]; found {}"#, self.describe(key)),
                    ));
                };
                let key = trait_key(key_text.inner())
                    .map_err(|message| self.error(self.at(key.id), message))?;
                Ok((Variable::Trait(key), position))
            }
            _ => Err(self.unsupported(expr)),
        }
    }

    /// Types a literal by the variable it is compared with.
    fn typed(&self, variable: &Variable, raw: Raw, at: usize) -> Result<Literal, CompileError> {
        let spec = row(variable);
        let name = display_name(variable);
        match (spec.ty, raw) {
            (Type::Int, Raw::Int(value)) => Ok(Literal::Int(value)),
            (Type::Int, Raw::Double(value)) => {
                // 2^63 is exact as a double; every whole double below it fits.
                const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
                if value.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&value) {
                    Ok(Literal::Int(value as i64))
                } else {
                    Err(self.error(
                        at,
                        format!("`{name}` is an int, so it cannot be compared with {value:?}; use a whole number"),
                    ))
                }
            }
            (Type::Double, Raw::Int(value)) => Ok(Literal::Double(value as f64)),
            (Type::Double, Raw::Double(value)) => Ok(Literal::Double(value)),
            (Type::String, Raw::String(value)) => {
                if *variable == Variable::Country {
                    self.check_country(&value, at)?;
                }
                Ok(Literal::String(value))
            }
            (Type::Bool, Raw::Bool(value)) => Ok(Literal::Bool(value)),
            (Type::Enum(kind), Raw::String(value)) => kind.literal(&value).ok_or_else(|| {
                let case = if kind.literal(&value.to_uppercase()).is_some() {
                    " (values are upper case)"
                } else {
                    ""
                };
                self.error(
                    at,
                    format!(
                        "{:?} is not a value of {name}{case}; the values are {}",
                        clip(&value),
                        kind.names().join(", ")
                    ),
                )
            }),
            (Type::Trait, Raw::String(value)) => Ok(Literal::String(value)),
            (Type::Trait, Raw::Int(value)) => Ok(Literal::Double(value as f64)),
            (Type::Trait, Raw::Double(value)) => Ok(Literal::Double(value)),
            (Type::Trait, Raw::Bool(value)) => Ok(Literal::Bool(value)),
            (_, Raw::Null) => Err(self.error(
                at,
                if spec.optional {
                    format!("null is not supported; test presence with has(), as in has({name})")
                } else {
                    format!("null is not supported, and `{name}` is never absent")
                },
            )),
            (ty, raw) => Err(self.error(
                at,
                format!(
                    "`{name}` is {}, so it cannot be compared with {}; write it as in {}",
                    ty.with_article(),
                    raw.describe(),
                    spec.example
                ),
            )),
        }
    }

    /// Country codes are compared as stored: an assigned ISO code in upper
    /// case; anything else would never match.
    fn check_country(&self, value: &str, at: usize) -> Result<(), CompileError> {
        match parse_country_code(value) {
            Ok(code) if code == value => Ok(()),
            Ok(code) => {
                Err(self.error(at, format!("country codes are upper case: write {code:?}")))
            }
            Err(_) => Err(self.error(
                at,
                format!(
                    r#"{:?} is not an ISO 3166-1 alpha-2 country code, such as "TR", "EG" or "IR""#,
                    clip(value)
                ),
            )),
        }
    }

    /// The start of the name a node spells, or the node's own position.
    fn name_position(&self, expr: &IdedExpr) -> usize {
        match dotted_name(expr) {
            Some((_, root)) => self.at(root),
            None => self.at(expr.id),
        }
    }

    /// A short description of a node, for messages.
    fn describe(&self, expr: &IdedExpr) -> String {
        match &expr.expr {
            Expr::Literal(_) => match self.operand(expr) {
                Ok(Operand::Literal(raw, _)) => raw.describe(),
                _ => "a literal".to_owned(),
            },
            Expr::Ident(_) | Expr::Select(_) => match dotted_name(expr) {
                Some((name, _)) => format!("`{}`", clip(&name)),
                None => "a field selection".to_owned(),
            },
            Expr::List(_) => "a list".to_owned(),
            Expr::Map(_) => "a map".to_owned(),
            Expr::Struct(_) => "a message".to_owned(),
            Expr::Call(_) | Expr::Comprehension(_) | Expr::Unspecified => {
                "an expression".to_owned()
            }
        }
    }
}

/// The name an identifier or a chain of field selections spells, and the
/// id of its first identifier: `customer.traits.tier`.
fn dotted_name(expr: &IdedExpr) -> Option<(String, u64)> {
    let mut segments = Vec::new();
    let mut node = expr;
    loop {
        match &node.expr {
            Expr::Ident(name) => {
                segments.push(name.as_str());
                segments.reverse();
                return Some((segments.join("."), node.id));
            }
            Expr::Select(select) if !select.test => {
                segments.push(select.field.as_str());
                node = &select.operand;
            }
            _ => return None,
        }
    }
}

fn comparison(function: &str) -> Option<Comparison> {
    match function {
        operators::EQUALS => Some(Comparison::Eq),
        operators::NOT_EQUALS => Some(Comparison::Ne),
        operators::LESS => Some(Comparison::Lt),
        operators::LESS_EQUALS => Some(Comparison::Le),
        operators::GREATER => Some(Comparison::Gt),
        operators::GREATER_EQUALS => Some(Comparison::Ge),
        _ => None,
    }
}

fn string_test(function: &str) -> Option<StringTest> {
    match function {
        "startsWith" => Some(StringTest::StartsWith),
        "endsWith" => Some(StringTest::EndsWith),
        "contains" => Some(StringTest::Contains),
        _ => None,
    }
}

/// The comparison with its sides swapped: `3 < x` is `x > 3`.
fn flipped(op: Comparison) -> Comparison {
    match op {
        Comparison::Eq => Comparison::Eq,
        Comparison::Ne => Comparison::Ne,
        Comparison::Lt => Comparison::Gt,
        Comparison::Le => Comparison::Ge,
        Comparison::Gt => Comparison::Lt,
        Comparison::Ge => Comparison::Le,
    }
}

mod refusals;
#[cfg(test)]
mod tests;
