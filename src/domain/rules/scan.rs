//! From text to CEL's syntax tree, with every refusal at a character
//! position.
//!
//! [`scan`] checks the size and the bracket nesting with a small lexer that
//! knows CEL's strings and comments, so that nothing too deep reaches the
//! parser. [`parse`] then runs the `cel` crate's parser, whose own
//! recursion limit is a backstop, and turns its errors into readable
//! messages at character positions. Both must run on a thread with a
//! known stack (see [`PARSER_STACK_BYTES`]).
//!
//! The scanner keeps its own nesting count rather than relying on the
//! parser's `max_recursion_depth` alone, for three reasons:
//!
//! - the parser counts nested expressions and reports its limit with a
//!   position that is not a line and a column like its other errors, so
//!   the refusal could not point at the bracket; the scanner names the
//!   bracket that crossed the limit, with the message clients already see;
//! - it refuses hostile input before a parsing thread is started;
//! - the parser's limit does not bound the depth of its own syntax tree:
//!   chains such as `a.a.a…` or `1+1+…` nest no expression yet build trees
//!   thousands of levels deep, which its visitor walks recursively. The
//!   large stack of the parsing thread, not the limit, is what keeps those
//!   from overflowing.

use cel::common::ast::{IdedExpr, SourceInfo};
use cel::parser::{ParseErrors, Parser};

use super::error::{char_position, CompileError};

/// The longest rule, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// The deepest nesting of brackets, and of conditions.
pub const MAX_NESTING: usize = 64;
/// The stack of the parsing thread: four times what the worst rule within
/// the limits above was measured to need in a debug build. The `cel`
/// crate's ANTLR parser recurses deeply (in a debug build 64 nested
/// brackets take about 12 MiB, more than a tokio worker has), and a stack
/// overflow would abort the whole service.
pub(super) const PARSER_STACK_BYTES: usize = 64 << 20;

/// Parses a rule that [`scan`] accepted. Run it on a thread with
/// [`PARSER_STACK_BYTES`] of stack.
///
/// The parser keeps its default recursion limit, 96 nested expressions.
/// Brackets never reach it (the scanner stops them at [`MAX_NESTING`]);
/// only chains of the conditional `? :`, which nest without brackets, do,
/// and those are refused either way.
pub(super) fn parse(source: &str) -> Result<(IdedExpr, SourceInfo), CompileError> {
    Parser::new()
        .parse_with_source_info(source)
        .map_err(|errors| parse_error(source, &errors))
}

/// Refuses a rule that is too long, nests brackets too deeply, or has a
/// string the parser's lexer would not read as one. The last check keeps
/// this scanner's idea of what is inside a string the same as the
/// parser's, so that no bracket escapes the count.
pub(super) fn scan(source: &str) -> Result<(), CompileError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CompileError {
            position: char_position(source, MAX_SOURCE_BYTES),
            message: format!(
                "the rule is {} bytes long; a rule has at most {MAX_SOURCE_BYTES} bytes",
                source.len()
            ),
        });
    }
    if source.trim().is_empty() {
        return Err(CompileError {
            position: 0,
            message: "the rule is empty; write a condition such as features.purchase_count > 0"
                .to_owned(),
        });
    }
    let chars: Vec<char> = source.chars().collect();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '"' | '\'' => {
                i = skip_string(&chars, i, i, false)?;
                continue;
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                // b"...", r"...", br"...": a prefixed string, else an identifier.
                let mut quote = i;
                if matches!(chars[quote], 'b' | 'B') {
                    quote += 1;
                }
                let raw = matches!(chars.get(quote), Some('r' | 'R'));
                if raw {
                    quote += 1;
                }
                if quote > i && matches!(chars.get(quote), Some('"' | '\'')) {
                    i = skip_string(&chars, i, quote, raw)?;
                    continue;
                }
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                continue;
            }
            '0'..='9' => {
                i = skip_number(&chars, i);
                continue;
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(CompileError {
                        position: i,
                        message: format!(
                            "the rule nests brackets more than {MAX_NESTING} levels deep"
                        ),
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Skips the string whose prefix starts at `start` and whose first quote is
/// at `quote`, following the CEL lexer; returns the index after it.
fn skip_string(
    chars: &[char],
    start: usize,
    quote: usize,
    raw: bool,
) -> Result<usize, CompileError> {
    let delimiter = chars[quote];
    let triple =
        chars.get(quote + 1) == Some(&delimiter) && chars.get(quote + 2) == Some(&delimiter);
    let mut i = if triple { quote + 3 } else { quote + 1 };
    let unterminated = || CompileError {
        position: start,
        message: if triple {
            format!("this string has no closing {0}{0}{0}", delimiter)
        } else {
            format!("this string has no closing {delimiter} on its line")
        },
    };
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unterminated());
        };
        if c == delimiter {
            if !triple {
                return Ok(i + 1);
            }
            if chars.get(i + 1) == Some(&delimiter) && chars.get(i + 2) == Some(&delimiter) {
                return Ok(i + 3);
            }
        } else if !triple && (c == '\n' || c == '\r') {
            return Err(unterminated());
        } else if c == '\\' && !raw {
            i += escape_length(&chars[i..]).ok_or_else(|| CompileError {
                position: i,
                message: r#"invalid escape in a string; the escapes are \n \t \r \" \' \\ \xHH \uHHHH \UHHHHHHHH and octal \NNN"#
                    .to_owned(),
            })?;
            continue;
        }
        i += 1;
    }
}

/// The length of the escape sequence at the start of `chars` (which starts
/// with a backslash), if CEL knows it.
fn escape_length(chars: &[char]) -> Option<usize> {
    let hex = |from: usize, count: usize| {
        chars.len() >= from + count
            && chars[from..from + count]
                .iter()
                .all(char::is_ascii_hexdigit)
    };
    match chars.get(1)? {
        'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '"' | '\'' | '\\' | '?' | '`' => Some(2),
        'x' | 'X' if hex(2, 2) => Some(4),
        'u' if hex(2, 4) => Some(6),
        'U' if hex(2, 8) => Some(10),
        '0'..='3'
            if matches!(chars.get(2), Some('0'..='7'))
                && matches!(chars.get(3), Some('0'..='7')) =>
        {
            Some(4)
        }
        _ => None,
    }
}

/// Skips a number literal (`12`, `0x1F`, `1.5e3`, `5u`); returns the index
/// after it.
fn skip_number(chars: &[char], start: usize) -> usize {
    let digits = |mut i: usize, hex: bool| {
        while i < chars.len()
            && (chars[i].is_ascii_digit() || (hex && chars[i].is_ascii_hexdigit()))
        {
            i += 1;
        }
        i
    };
    let mut i;
    if chars[start] == '0' && chars.get(start + 1) == Some(&'x') {
        i = digits(start + 2, true);
    } else {
        i = digits(start, false);
        if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            i = digits(i + 1, false);
        }
        if matches!(chars.get(i), Some('e' | 'E')) {
            let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
            if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
                i = digits(i + 1 + sign, false);
            }
        }
    }
    if matches!(chars.get(i), Some('u' | 'U')) {
        i += 1;
    }
    i
}

/// The first of the parser's errors, at its character position.
fn parse_error(source: &str, errors: &ParseErrors) -> CompileError {
    let Some(first) = errors.errors.first() else {
        return CompileError {
            position: 0,
            message: "the rule could not be parsed".to_owned(),
        };
    };
    let (line, column) = first.pos;
    let mut position = 0usize;
    if line >= 1 && column >= 1 {
        let line = usize::try_from(line - 1).unwrap_or(0);
        let column = usize::try_from(column - 1).unwrap_or(0);
        position = source
            .split('\n')
            .take(line)
            .map(|text| text.chars().count() + 1)
            .sum::<usize>()
            + column;
    }
    CompileError {
        position: position.min(source.chars().count()),
        message: describe_parse_error(&first.msg),
    }
}

/// The parser's message, made readable for a person typing a rule.
fn describe_parse_error(raw: &str) -> String {
    let message = raw.strip_prefix("Syntax error: ").unwrap_or(raw);
    if message.contains("Recursion limit") {
        return format!("the rule nests more than {MAX_NESTING} levels deep");
    }
    if message.contains("error recovery attempt limit") {
        return "too many syntax errors; check the brackets and the quotes".to_owned();
    }
    if message.contains("invalid argument to has() macro") {
        return r#"has() takes a variable, as in has(customer.age) or has(customer.traits.tier); for a trait key with - write "my-key" in customer.traits"#.to_owned();
    }
    if let Some(word) = message.strip_prefix("reserved identifier: ") {
        return format!("`{word}` is a reserved word in CEL, not a variable");
    }
    if let Some(text) = message.strip_prefix("token recognition error at: ") {
        return format!("syntax error: unexpected character {text}");
    }
    let mut message = message
        .replace("'<EOF>'", "the end of the rule")
        .replace("<EOF>", "the end of the rule");
    if let Some(at) = message.find(" expecting {") {
        if message[at..].contains("IDENTIFIER") {
            message.truncate(at);
            message.push_str(" where a value, a variable, (, [, ! or - should be");
        }
    }
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    format!("syntax error: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::testing::{at, compare, ok, refused, text};
    use crate::domain::rules::{compile, Comparison, Literal, Predicate, Variable};
    use Comparison::{Eq, Gt};

    #[test]
    fn positions_count_characters_and_lines() {
        let source = r#""é" == customer.colour"#;
        assert_eq!(at(source, "customer"), 7);
        refused(source, 7, "unknown variable `customer.colour`");
        let source = "customer.city == \"İzmir\" && customer.age + 1 > 2";
        refused(source, at(source, "+"), "`+` is not supported");
        let source = "customer.age > 3 &&\n  features.colour == 1";
        refused(source, 22, "unknown variable `features.colour`");
        let source = "customer.age > 3 &&\n\tfeatures.purchase_count * 2 > 1";
        refused(source, at(source, "*"), "`*` is not supported");
    }

    #[test]
    fn syntax_errors_have_positions() {
        refused("customer.age > 3 &&", 19, "syntax error");
        refused("(customer.age > 3", 17, "syntax error");
        refused("customer.age > 3)", 16, "syntax error");
        refused("customer.age > 3 &&\n  )", 22, "syntax error");
        refused("customer.city == 'é' && é", 24, "unexpected character 'é'");
        refused("", 0, "the rule is empty");
        refused("  \n\t", 0, "the rule is empty");
        refused(r#"customer.city == "Izmir"#, 17, "has no closing \"");
        refused("customer.city == '''Izmir", 17, "has no closing '''");
        refused(
            "customer.city == \"a\nb\"",
            17,
            "has no closing \" on its line",
        );
        refused(r#"customer.city == "a\qb""#, 19, "invalid escape");
    }

    #[test]
    fn strings_and_comments_do_not_count_as_nesting() {
        let parens = "(".repeat(100);
        assert_eq!(
            ok(&format!("customer.city == \"{parens}\"")),
            compare(Variable::City, Eq, text(&parens))
        );
        ok(&format!("customer.city == '''{parens}\n'''"));
        ok(&format!("customer.city == r\"{parens}\\\""));
        ok(&format!(
            "customer.city == \"\\\"{parens}\\u00e9\\x41\\101\""
        ));
        ok(&format!("customer.age > 1 // {parens}\n&& true"));
    }

    #[test]
    fn size_and_nesting_limits() {
        let padded = format!("true{}", " ".repeat(MAX_SOURCE_BYTES - 4));
        assert_eq!(ok(&padded), Predicate::Const(true));
        refused(
            &format!("{padded} "),
            MAX_SOURCE_BYTES,
            "at most 4096 bytes",
        );
        // 2 bytes per character: the limit falls at character 2048.
        refused(&"é".repeat(2049), 2048, "the rule is 4098 bytes long");
        let nested =
            |depth: usize| format!("{}customer.age > 1{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(
            ok(&nested(MAX_NESTING)),
            compare(Variable::Age, Gt, Literal::Int(1))
        );
        refused(
            &nested(MAX_NESTING + 1),
            MAX_NESTING,
            "more than 64 levels deep",
        );
        let nots = format!(
            "{}customer.objects_to_profiling{}",
            "!(".repeat(64),
            ")".repeat(64)
        );
        let mut expected = Predicate::IsTrue(Variable::ObjectsToProfiling);
        for _ in 0..64 {
            expected = Predicate::Not(Box::new(expected));
        }
        assert_eq!(ok(&nots), expected);
        refused(&format!("!({nots})"), 129, "more than 64 levels deep");
        let long_and = vec!["customer.age > 1"; 200].join(" && ");
        let Predicate::And(operands) = ok(&long_and) else {
            panic!("not an And");
        };
        assert_eq!(operands.len(), 200);
    }

    /// Every result is a predicate or a one-line error inside the text.
    fn survives(source: &str) {
        let length = source.chars().count();
        match compile(source) {
            Ok(_) => {}
            Err(error) => {
                assert!(error.position <= length, "{source:?}: {error:?}");
                assert!(!error.message.is_empty());
                assert!(error.message.len() < 2000, "{source:?}: {error:?}");
                assert!(!error.message.contains('\n'), "{source:?}: {error:?}");
            }
        }
    }

    #[test]
    fn no_input_panics_or_overflows_the_stack() {
        let fixed = [
            "",
            " ",
            "(",
            ")",
            "(((",
            ")))",
            "((customer.age > 1)",
            "customer.age > 1))",
            "&&",
            "||",
            "!",
            "!!!!",
            "-",
            "--1",
            "customer.",
            ".customer.age",
            "customer..age",
            "customer.age >",
            "> 3",
            "é",
            "日本語 == 1",
            "customer.city == \"日本\"",
            "\u{0}",
            "\u{feff}customer.age > 3",
            "customer.age > 3 // comment",
            "/* c */",
            "customer.traits[]",
            "customer.traits[\"\"] == 1",
            "has()",
            "has(customer.age, 1)",
            "customer.age in",
            "in [1]",
            "[",
            "{",
            "{}",
            "[]",
            "customer.age > 99999999999999999999",
            "1e999",
            "customer.income > 1e999",
            "0x",
            "0xFFFFFFFFFFFFFFFFFu",
            "\"\\u12\"",
            "'''",
            "r'",
            "b'\\xZZ'",
            "\\",
            "`customer`.age",
            "customer.`age` > 1",
            "customer.age >= -",
            "a ? b ((?))",
            "customer.city == \"\\uD800\"",
            "customer.city == '\u{1F600}'",
            "!!(!!!!!!(!!!!(((((!!(!!(!!!!((!!(!!!!!!(!!!!(((((!!(!!(!!!!((1",
            "customer.traits.x.y.z.w.v == [[[[1]]]]",
            "customer.age in [[1], {}]",
            "customer.age.exists(x, x)",
            "customer.city.size() > 1",
            "customer.city.startsWith()",
            "has(customer.traits.a-b)",
            "customer.age > 1 ? customer.age > 2 : customer.age > 3",
        ];
        for source in fixed {
            survives(source);
        }
        let generated = [
            "(".repeat(10_000),
            "(".repeat(4000),
            "[".repeat(4096),
            "{".repeat(65),
            "f(".repeat(2000),
            "!(".repeat(2000),
            "-(".repeat(2000),
            format!("1{}", "+1".repeat(2047)),
            format!("customer.age{}", " < 1".repeat(1000)),
            format!("a{}", ".a".repeat(2000)),
            format!("customer.traits{}", "[0]".repeat(1300)),
            format!("a{}", "?a:a".repeat(1000)),
            format!("{}1{}", "(".repeat(64), "+1".repeat(1980)),
            format!("{}a{}", "f(".repeat(64), ".a".repeat(1900)),
            format!("customer.age in [{}1]", "1,".repeat(2000)),
            "!".repeat(4096),
            "-".repeat(4095) + "1",
            "\"".repeat(4096),
            "é".repeat(5000),
        ];
        for source in &generated {
            survives(source);
        }
        // A token soup from a fixed seed.
        let tokens = [
            "customer.age",
            "features.stage",
            "customer.traits",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "&&",
            "||",
            "!",
            "==",
            "<",
            ">=",
            "in",
            "\"A\"",
            "'b'",
            "3",
            "-",
            "2.5",
            "has(",
            ".startsWith(",
            "[\"k\"]",
            "\"",
            "'",
            ",",
            "é",
            " ",
            "?",
            ":",
            "+",
            ".",
            "true",
            "null",
            "\\",
            "//",
            "\n",
            "u",
            "r\"",
            "b'",
            "size(",
            ".exists(x,",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..400 {
            let length = 1 + next() % 24;
            let source: String = (0..length).map(|_| tokens[next() % tokens.len()]).collect();
            survives(&source);
        }
    }
}
