//! Worker filters: the model of `golem:api/host`'s `worker-any-filter`, its evaluation against
//! worker records, and SQL `LIKE` matching.
//!
//! A filter is any-of-all-of: a [`WorkerFilter`] matches a worker when at least one of its
//! [`AllFilter`]s does, and an [`AllFilter`] matches when every one of its [`PropertyFilter`]s
//! does. Choices where the spec leaves a case open:
//!
//! * An any-filter with no all-filters matches nothing; an all-filter with no property filters
//!   matches everything (the neutral elements of `or` and `and`). "No filter at all" is
//!   `option::none` at the API and matches everything.
//! * `like` / `not-like` follow SQL: `%` matches any run of characters (also none), `_` exactly
//!   one character, `\` makes the next character literal, and everything else matches itself,
//!   case-sensitively. The pattern must match the whole value: `acc` is not like `acc-1`.
//! * Statuses are ordered as the WIT enum declares them: `running < idle < suspended <
//!   interrupted < retrying < failed < exited`.
//! * `created-at` values are milliseconds since the Unix epoch, like the worker records.
//! * An `env` filter on a variable the worker does not have is false for every comparator (as
//!   a comparison with SQL `NULL`): `env.REGION != 'eu'` matches only workers that have a
//!   `REGION` and it is not `eu`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use crate::worker_records::{WorkerRecord, WorkerStatus};

/// `filter-comparator`: comparisons of ordered values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    Equal,
    NotEqual,
    GreaterEqual,
    Greater,
    LessEqual,
    Less,
}

impl Comparator {
    /// Whether `actual OP expected` holds.
    pub fn holds<T: Ord>(self, actual: &T, expected: &T) -> bool {
        let ordering = actual.cmp(expected);
        match self {
            Comparator::Equal => ordering == Ordering::Equal,
            Comparator::NotEqual => ordering != Ordering::Equal,
            Comparator::GreaterEqual => ordering != Ordering::Less,
            Comparator::Greater => ordering == Ordering::Greater,
            Comparator::LessEqual => ordering != Ordering::Greater,
            Comparator::Less => ordering == Ordering::Less,
        }
    }

    /// The WIT enum case name.
    pub fn wit_name(self) -> &'static str {
        match self {
            Comparator::Equal => "equal",
            Comparator::NotEqual => "not-equal",
            Comparator::GreaterEqual => "greater-equal",
            Comparator::Greater => "greater",
            Comparator::LessEqual => "less-equal",
            Comparator::Less => "less",
        }
    }

    fn from_wit(name: &str) -> Option<Self> {
        Some(match name {
            "equal" => Comparator::Equal,
            "not-equal" => Comparator::NotEqual,
            "greater-equal" => Comparator::GreaterEqual,
            "greater" => Comparator::Greater,
            "less-equal" => Comparator::LessEqual,
            "less" => Comparator::Less,
            _ => return None,
        })
    }

    /// The operator in the `--filter` expression syntax.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparator::Equal => "==",
            Comparator::NotEqual => "!=",
            Comparator::GreaterEqual => ">=",
            Comparator::Greater => ">",
            Comparator::LessEqual => "<=",
            Comparator::Less => "<",
        }
    }
}

/// `string-filter-comparator`: comparisons of strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringComparator {
    Equal,
    NotEqual,
    Like,
    NotLike,
}

impl StringComparator {
    /// Whether `actual OP expected` holds (`expected` is the pattern for `like`).
    pub fn holds(self, actual: &str, expected: &str) -> bool {
        match self {
            StringComparator::Equal => actual == expected,
            StringComparator::NotEqual => actual != expected,
            StringComparator::Like => like(actual, expected),
            StringComparator::NotLike => !like(actual, expected),
        }
    }

    /// The WIT enum case name.
    pub fn wit_name(self) -> &'static str {
        match self {
            StringComparator::Equal => "equal",
            StringComparator::NotEqual => "not-equal",
            StringComparator::Like => "like",
            StringComparator::NotLike => "not-like",
        }
    }

    fn from_wit(name: &str) -> Option<Self> {
        Some(match name {
            "equal" => StringComparator::Equal,
            "not-equal" => StringComparator::NotEqual,
            "like" => StringComparator::Like,
            "not-like" => StringComparator::NotLike,
            _ => return None,
        })
    }

    /// The operator in the `--filter` expression syntax.
    pub fn symbol(self) -> &'static str {
        match self {
            StringComparator::Equal => "==",
            StringComparator::NotEqual => "!=",
            StringComparator::Like => "like",
            StringComparator::NotLike => "not like",
        }
    }
}

/// `worker-property-filter`: one condition on one property of a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropertyFilter {
    Name {
        comparator: StringComparator,
        value: String,
    },
    Status {
        comparator: Comparator,
        value: WorkerStatus,
    },
    Version {
        comparator: Comparator,
        value: u64,
    },
    /// Milliseconds since the Unix epoch.
    CreatedAt {
        comparator: Comparator,
        value: u64,
    },
    Env {
        name: String,
        comparator: StringComparator,
        value: String,
    },
}

impl PropertyFilter {
    /// Whether the worker satisfies this condition.
    pub fn matches(&self, worker: &WorkerRecord) -> bool {
        match self {
            PropertyFilter::Name { comparator, value } => {
                comparator.holds(&worker.id.worker_name, value)
            }
            PropertyFilter::Status { comparator, value } => {
                comparator.holds(&status_rank(worker.status), &status_rank(*value))
            }
            PropertyFilter::Version { comparator, value } => {
                comparator.holds(&worker.component_version, value)
            }
            PropertyFilter::CreatedAt { comparator, value } => {
                comparator.holds(&worker.created_at_ms, value)
            }
            PropertyFilter::Env {
                name,
                comparator,
                value,
            } => worker
                .env
                .iter()
                .find(|(k, _)| k == name)
                .is_some_and(|(_, v)| comparator.holds(v, value)),
        }
    }
}

/// `worker-all-filter`: every condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllFilter(pub Vec<PropertyFilter>);

/// `worker-any-filter`: at least one all-filter must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFilter(pub Vec<AllFilter>);

impl AllFilter {
    /// Whether the worker satisfies every condition.
    pub fn matches(&self, worker: &WorkerRecord) -> bool {
        self.0.iter().all(|f| f.matches(worker))
    }
}

impl WorkerFilter {
    /// Whether the worker satisfies at least one all-filter.
    pub fn matches(&self, worker: &WorkerRecord) -> bool {
        self.0.iter().any(|f| f.matches(worker))
    }

    /// Reads a WIT `worker-any-filter` value.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let mut any = Vec::new();
        for all in list_field(value, "filters")? {
            let mut conditions = Vec::new();
            for property in list_field(&all, "filters")? {
                conditions.push(property_from_value(&property)?);
            }
            any.push(AllFilter(conditions));
        }
        Ok(WorkerFilter(any))
    }

    /// The WAVE text of the `worker-any-filter` value.
    pub fn to_wave(&self) -> String {
        use crate::abi::wave_string;
        let all: Vec<String> = self
            .0
            .iter()
            .map(|all| {
                let props: Vec<String> = all
                    .0
                    .iter()
                    .map(|p| match p {
                        PropertyFilter::Name { comparator, value } => format!(
                            "name({{comparator: {}, value: {}}})",
                            comparator.wit_name(),
                            wave_string(value)
                        ),
                        PropertyFilter::Status { comparator, value } => format!(
                            "status({{comparator: {}, value: {}}})",
                            comparator.wit_name(),
                            value.as_str()
                        ),
                        PropertyFilter::Version { comparator, value } => format!(
                            "version({{comparator: {}, value: {value}}})",
                            comparator.wit_name()
                        ),
                        PropertyFilter::CreatedAt { comparator, value } => format!(
                            "created-at({{comparator: {}, value: {value}}})",
                            comparator.wit_name()
                        ),
                        PropertyFilter::Env {
                            name,
                            comparator,
                            value,
                        } => format!(
                            "env({{name: {}, comparator: {}, value: {}}})",
                            wave_string(name),
                            comparator.wit_name(),
                            wave_string(value)
                        ),
                    })
                    .collect();
                format!("{{filters: [{}]}}", props.join(", "))
            })
            .collect();
        format!("{{filters: [{}]}}", all.join(", "))
    }
}

/// The filter in the `--filter` expression syntax of `golemw worker list`.
impl fmt::Display for WorkerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("false");
        }
        for (i, all) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            if all.0.is_empty() {
                f.write_str("true")?;
            }
            for (j, p) in all.0.iter().enumerate() {
                if j > 0 {
                    f.write_str(" and ")?;
                }
                match p {
                    PropertyFilter::Name { comparator, value } => {
                        write!(f, "name {} {}", comparator.symbol(), quote(value))?
                    }
                    PropertyFilter::Status { comparator, value } => {
                        write!(f, "status {} {}", comparator.symbol(), value.as_str())?
                    }
                    PropertyFilter::Version { comparator, value } => {
                        write!(f, "version {} {value}", comparator.symbol())?
                    }
                    PropertyFilter::CreatedAt { comparator, value } => {
                        write!(f, "created-at {} {value}", comparator.symbol())?
                    }
                    PropertyFilter::Env {
                        name,
                        comparator,
                        value,
                    } => write!(
                        f,
                        "env.{} {} {}",
                        quote(name),
                        comparator.symbol(),
                        quote(value)
                    )?,
                }
            }
        }
        Ok(())
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The position of a status in the WIT enum, which orders statuses for comparisons.
pub fn status_rank(status: WorkerStatus) -> u8 {
    match status {
        WorkerStatus::Running => 0,
        WorkerStatus::Idle => 1,
        WorkerStatus::Suspended => 2,
        WorkerStatus::Interrupted => 3,
        WorkerStatus::Retrying => 4,
        WorkerStatus::Failed => 5,
        WorkerStatus::Exited => 6,
    }
}

/// Every status, in WIT order.
pub const ALL_STATUSES: [WorkerStatus; 7] = [
    WorkerStatus::Running,
    WorkerStatus::Idle,
    WorkerStatus::Suspended,
    WorkerStatus::Interrupted,
    WorkerStatus::Retrying,
    WorkerStatus::Failed,
    WorkerStatus::Exited,
];

/// A status by its WIT name.
pub fn status_from_name(name: &str) -> Option<WorkerStatus> {
    ALL_STATUSES.into_iter().find(|s| s.as_str() == name)
}

fn list_field(record: &Value, field: &str) -> Result<Vec<Value>, String> {
    for (name, value) in record.unwrap_record() {
        if name == field {
            return Ok(value.unwrap_list().map(|v| v.into_owned()).collect());
        }
    }
    Err(format!("the filter record has no `{field}` field"))
}

fn property_from_value(value: &Value) -> Result<PropertyFilter, String> {
    let (case, payload) = value.unwrap_variant();
    let payload = payload.ok_or_else(|| format!("filter case `{case}` has no payload"))?;
    let mut comparator = None;
    let mut text = None;
    let mut number = None;
    let mut status = None;
    let mut env_name = None;
    for (field, v) in payload.unwrap_record() {
        match field.as_ref() {
            "comparator" => comparator = Some(v.unwrap_enum().into_owned()),
            "value" if case == "name" || case == "env" => {
                text = Some(v.unwrap_string().into_owned())
            }
            "value" if case == "status" => status = Some(v.unwrap_enum().into_owned()),
            "value" => number = Some(v.unwrap_u64()),
            "name" => env_name = Some(v.unwrap_string().into_owned()),
            _ => {}
        }
    }
    let comparator = comparator.ok_or("a filter without a comparator")?;
    let ordered = || {
        Comparator::from_wit(&comparator).ok_or_else(|| format!("unknown comparator {comparator}"))
    };
    let string = || {
        StringComparator::from_wit(&comparator)
            .ok_or_else(|| format!("unknown string comparator {comparator}"))
    };
    let missing = |what: &str| format!("filter case `{case}` has no {what}");
    Ok(match case.as_ref() {
        "name" => PropertyFilter::Name {
            comparator: string()?,
            value: text.ok_or_else(|| missing("value"))?,
        },
        "status" => {
            let name = status.ok_or_else(|| missing("value"))?;
            PropertyFilter::Status {
                comparator: ordered()?,
                value: status_from_name(&name).ok_or_else(|| format!("unknown status {name}"))?,
            }
        }
        "version" => PropertyFilter::Version {
            comparator: ordered()?,
            value: number.ok_or_else(|| missing("value"))?,
        },
        "created-at" => PropertyFilter::CreatedAt {
            comparator: ordered()?,
            value: number.ok_or_else(|| missing("value"))?,
        },
        "env" => PropertyFilter::Env {
            name: env_name.ok_or_else(|| missing("name"))?,
            comparator: string()?,
            value: text.ok_or_else(|| missing("value"))?,
        },
        other => return Err(format!("unknown filter case `{other}`")),
    })
}

/// SQL `LIKE`: whether `text` matches `pattern`, where `%` matches any run of characters,
/// `_` exactly one, and `\` makes the next character literal (a trailing `\` is itself).
pub fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point (the last `%`): linear in practice, at worst
    // O(text × pattern), never exponential.
    let (mut t, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|token| *token == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ComponentId, WorkerId};

    fn worker(name: &str, status: WorkerStatus, version: u64, created: u64) -> WorkerRecord {
        WorkerRecord {
            id: WorkerId {
                component_id: ComponentId(uuid::Uuid::nil()),
                worker_name: name.into(),
            },
            uid: uuid::Uuid::nil(),
            component_version: version,
            args: vec![],
            env: vec![("REGION".into(), "eu-west".into())],
            created_at_ms: created,
            status,
            retry_count: 0,
            last_error: None,
            oplog_len: 1,
            history: Default::default(),
            last_recovery: None,
        }
    }

    #[test]
    fn like_follows_sql() {
        assert!(like("acc-1", "acc-%"));
        assert!(like("acc-", "acc-%"));
        assert!(!like("xacc-1", "acc-%"));
        assert!(like("xacc-1", "%acc-%"));
        assert!(like("a", "%"));
        assert!(like("", "%"));
        assert!(like("", ""));
        assert!(!like("a", ""));
        assert!(!like("acc", "acc-%"));
        assert!(
            !like("acc-1", "acc"),
            "no wildcard: the whole value must match"
        );
        assert!(like("acc-1", "acc-1"));
        assert!(like("abc", "a_c"));
        assert!(!like("ac", "a_c"));
        assert!(!like("abbc", "a_c"));
        assert!(like("a%c", "a\\%c"));
        assert!(!like("abc", "a\\%c"));
        assert!(like("a_c", "a\\_c"));
        assert!(!like("abc", "a\\_c"));
        assert!(like("ab\\", "ab\\"), "a trailing backslash is literal");
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("mississippi", "m%i%s%i"));
        assert!(!like("mississippi", "m%x%i"));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
        assert!(like("Ünïcödé", "Ü_ï%é"));
        assert!(!like("ACC-1", "acc-%"), "case-sensitive");
        // The greedy algorithm must not be exponential.
        let text = "a".repeat(5000);
        assert!(!like(&text, &format!("{}b", "%a".repeat(30))));
    }

    #[test]
    fn comparators() {
        use Comparator::*;
        let cases = [
            (Equal, [false, true, false]),
            (NotEqual, [true, false, true]),
            (GreaterEqual, [false, true, true]),
            (Greater, [false, false, true]),
            (LessEqual, [true, true, false]),
            (Less, [true, false, false]),
        ];
        for (c, expected) in cases {
            let got = [1u64, 2, 3].map(|actual| c.holds(&actual, &2));
            assert_eq!(got, expected, "{c:?}");
        }
        assert!(StringComparator::NotLike.holds("b-1", "a-%"));
        assert!(!StringComparator::NotLike.holds("a-1", "a-%"));
        assert!(StringComparator::NotEqual.holds("a", "b"));
    }

    #[test]
    fn properties_any_of_all_of() {
        let idle = worker("acc-1", WorkerStatus::Idle, 2, 1000);
        let failed = worker("other", WorkerStatus::Failed, 0, 5000);
        let name_like = PropertyFilter::Name {
            comparator: StringComparator::Like,
            value: "acc-%".into(),
        };
        let status_failed = PropertyFilter::Status {
            comparator: Comparator::Equal,
            value: WorkerStatus::Failed,
        };
        let status_at_least_failed = PropertyFilter::Status {
            comparator: Comparator::GreaterEqual,
            value: WorkerStatus::Failed,
        };
        let version_2 = PropertyFilter::Version {
            comparator: Comparator::GreaterEqual,
            value: 2,
        };
        let created_before = PropertyFilter::CreatedAt {
            comparator: Comparator::Less,
            value: 2000,
        };
        let env_eu = PropertyFilter::Env {
            name: "REGION".into(),
            comparator: StringComparator::Like,
            value: "eu-%".into(),
        };
        let env_missing = PropertyFilter::Env {
            name: "ZONE".into(),
            comparator: StringComparator::NotEqual,
            value: "x".into(),
        };
        assert!(name_like.matches(&idle) && !name_like.matches(&failed));
        assert!(status_failed.matches(&failed) && !status_failed.matches(&idle));
        assert!(status_at_least_failed.matches(&failed));
        assert!(!status_at_least_failed.matches(&idle));
        assert!(version_2.matches(&idle) && !version_2.matches(&failed));
        assert!(created_before.matches(&idle) && !created_before.matches(&failed));
        assert!(env_eu.matches(&idle));
        assert!(
            !env_missing.matches(&idle),
            "a missing variable never matches"
        );

        // (name like acc-% and status == failed) or version >= 2
        let filter = WorkerFilter(vec![
            AllFilter(vec![name_like.clone(), status_failed.clone()]),
            AllFilter(vec![version_2.clone()]),
        ]);
        assert!(filter.matches(&idle));
        assert!(!filter.matches(&failed));
        let only_and = WorkerFilter(vec![AllFilter(vec![name_like, status_failed])]);
        assert!(!only_and.matches(&idle));
        assert!(
            !WorkerFilter(vec![]).matches(&idle),
            "an empty any-filter matches nothing"
        );
        assert!(
            WorkerFilter(vec![AllFilter(vec![])]).matches(&idle),
            "an empty all-filter matches everything"
        );
    }

    #[test]
    fn wave_round_trip() {
        let filter = WorkerFilter(vec![
            AllFilter(vec![
                PropertyFilter::Name {
                    comparator: StringComparator::NotLike,
                    value: "a\"b%".into(),
                },
                PropertyFilter::Status {
                    comparator: Comparator::NotEqual,
                    value: WorkerStatus::Exited,
                },
            ]),
            AllFilter(vec![
                PropertyFilter::Version {
                    comparator: Comparator::Less,
                    value: 3,
                },
                PropertyFilter::CreatedAt {
                    comparator: Comparator::Greater,
                    value: 1_700_000_000_000,
                },
                PropertyFilter::Env {
                    name: "K".into(),
                    comparator: StringComparator::Equal,
                    value: "v".into(),
                },
            ]),
        ]);
        let ty = any_filter_type();
        let value: Value = wasm_wave::from_str(&ty, &filter.to_wave()).unwrap();
        assert_eq!(WorkerFilter::from_value(&value).unwrap(), filter);
        assert_eq!(
            filter.to_string(),
            "name not like 'a\"b%' and status != exited or version < 3 and \
             created-at > 1700000000000 and env.'K' == 'v'"
        );
    }

    /// The wave type of `worker-any-filter`, built by hand.
    fn any_filter_type() -> wasm_wave::value::Type {
        use wasm_wave::value::Type;
        let ordered = Type::enum_ty([
            "equal",
            "not-equal",
            "greater-equal",
            "greater",
            "less-equal",
            "less",
        ])
        .unwrap();
        let string = Type::enum_ty(["equal", "not-equal", "like", "not-like"]).unwrap();
        let status = Type::enum_ty(ALL_STATUSES.map(|s| s.as_str())).unwrap();
        let rec = |fields: Vec<(&str, Type)>| Type::record(fields).unwrap();
        let property = Type::variant([
            (
                "name",
                Some(rec(vec![
                    ("comparator", string.clone()),
                    ("value", Type::STRING),
                ])),
            ),
            (
                "status",
                Some(rec(vec![
                    ("comparator", ordered.clone()),
                    ("value", status),
                ])),
            ),
            (
                "version",
                Some(rec(vec![
                    ("comparator", ordered.clone()),
                    ("value", Type::U64),
                ])),
            ),
            (
                "created-at",
                Some(rec(vec![("comparator", ordered), ("value", Type::U64)])),
            ),
            (
                "env",
                Some(rec(vec![
                    ("name", Type::STRING),
                    ("comparator", string),
                    ("value", Type::STRING),
                ])),
            ),
        ])
        .unwrap();
        let all = rec(vec![("filters", Type::list(property))]);
        rec(vec![("filters", Type::list(all))])
    }
}
