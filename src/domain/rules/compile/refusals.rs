//! The refusals of constructs the rule language does not have: arithmetic,
//! the conditional, macros, maps, messages, and conditions used as values.
//! Each names what it found, where, and what rules use instead.

use cel::common::ast::{operators, Expr, IdedExpr};

use super::{comparison, string_test, supported_list, Compiler};
use crate::domain::rules::error::{clip, CompileError};

impl Compiler<'_> {
    /// An operand that is neither a variable nor a literal.
    pub(super) fn unsupported_operand(&self, expr: &IdedExpr) -> CompileError {
        let is_condition = match &expr.expr {
            Expr::Select(select) => select.test,
            Expr::Call(call) => {
                comparison(&call.func_name).is_some()
                    || string_test(&call.func_name).is_some()
                    || matches!(
                        call.func_name.as_str(),
                        operators::LOGICAL_AND
                            | operators::LOGICAL_OR
                            | operators::LOGICAL_NOT
                            | operators::IN
                    )
            }
            _ => false,
        };
        if is_condition {
            let position = match &expr.expr {
                Expr::Select(_) => self.name_at(expr.id).0,
                _ => self.at(expr.id),
            };
            return self.error(
                position,
                "a condition cannot be compared or listed; compare a variable with a literal, as in features.purchases_90d > 2, and combine conditions with &&, || and !",
            );
        }
        self.unsupported(expr)
    }

    /// The refusal of a construct the rule language does not have.
    pub(super) fn unsupported(&self, expr: &IdedExpr) -> CompileError {
        let supported = supported_list();
        match &expr.expr {
            Expr::Call(call) => {
                let symbol = match call.func_name.as_str() {
                    operators::ADD => Some("+"),
                    operators::SUBSTRACT => Some("-"),
                    operators::MULTIPLY => Some("*"),
                    operators::DIVIDE => Some("/"),
                    operators::MODULO => Some("%"),
                    _ => None,
                };
                if let Some(symbol) = symbol {
                    return self.error(
                        self.at(expr.id),
                        format!("`{symbol}` is not supported; rules use {supported}"),
                    );
                }
                match call.func_name.as_str() {
                    operators::CONDITIONAL => self.error(
                        self.at(expr.id),
                        format!("the conditional `? :` is not supported; rules use {supported}"),
                    ),
                    operators::NEGATE => self.error(
                        self.at(expr.id),
                        "`-` applies only to a number literal, as in customer.income > -5",
                    ),
                    operators::INDEX => self.error(
                        self.at(expr.id),
                        r#"indexing with [ ] applies only to customer.traits, as in customer.traits["tier"]"#,
                    ),
                    _ => {
                        let (position, name) = self.name_at(expr.id);
                        let name = clip(if name.is_empty() { &call.func_name } else { name });
                        if call.target.is_some() {
                            self.error(
                                position,
                                format!("the method `{name}()` is not supported; strings have startsWith, endsWith and contains, and rules use {supported}"),
                            )
                        } else {
                            self.error(
                                position,
                                format!("the function `{name}()` is not supported; rules use {supported}"),
                            )
                        }
                    }
                }
            }
            Expr::Comprehension(_) => {
                let (position, name) = self.name_at(expr.id);
                self.error(
                    position,
                    format!("the macro `{}()` is not supported (nor are all, exists, exists_one, map and filter); rules use {supported}", clip(name)),
                )
            }
            Expr::List(_) => self.error(
                self.at(expr.id),
                r#"a list is allowed only on the right of `in`, as in features.stage in ["REBUYING", "JUST_BUYING"]"#,
            ),
            Expr::Map(_) => self.error(
                self.at(expr.id),
                format!("maps {{...}} are not supported; rules use {supported}"),
            ),
            Expr::Struct(_) => self.error(
                self.at(expr.id),
                format!("messages Name{{...}} are not supported; rules use {supported}"),
            ),
            Expr::Select(select) if select.test => self.error(
                self.name_at(expr.id).0,
                "has() is a condition on its own, as in has(customer.age) or !has(customer.age)",
            ),
            Expr::Select(_) => self.error(
                self.at(expr.id),
                "a field can be selected only from customer or features, as in customer.country",
            ),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => self.error(
                self.at(expr.id),
                format!("{} is not supported here; rules use {supported}", self.describe(expr)),
            ),
        }
    }
}
