//! Field-level last-write-wins (SPEC §4), as a pure function.
//!
//! Each mergeable field (title, description, completed, the deleted flag) is a register holding
//! the value and the [`Stamp`] of the write that set it. A write changes a field only if its
//! stamp is greater: later time wins, ties go to the greater op id. Because every register keeps
//! the maximum of the stamps it has seen, applying a set of writes gives the same state in any
//! order, any grouping and with any duplication.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::operation::{OpKind, Operation};

/// The last-write-wins clock of a write: its time, then its op id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub op_id: Uuid,
}

/// A field's value and the stamp of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<T> {
    pub value: T,
    pub stamp: Stamp,
}

/// The mergeable state of one task. `None` registers were never written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    pub title: Option<Register<String>>,
    pub description: Option<Register<Option<String>>>,
    pub completed: Option<Register<bool>>,
    pub deleted: Option<Register<bool>>,
    /// The earliest time of any write seen.
    pub created_at: Option<DateTime<Utc>>,
}

/// The fields one operation writes (SPEC §4, "Which fields an operation writes").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub stamp: Stamp,
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
    pub deleted: Option<bool>,
}

impl Write {
    pub fn from_operation(op: &Operation) -> Self {
        let stamp = Stamp {
            at: op.stamped_at,
            op_id: op.op_id,
        };
        let f = &op.fields;
        match op.kind {
            OpKind::Create => Self {
                stamp,
                title: f.title.clone(),
                description: Some(f.description.clone().flatten()),
                completed: Some(f.completed.unwrap_or(false)),
                deleted: Some(false),
            },
            OpKind::Update => Self {
                stamp,
                title: f.title.clone(),
                description: f.description.clone(),
                completed: f.completed,
                deleted: Some(false),
            },
            OpKind::Delete => Self {
                stamp,
                title: None,
                description: None,
                completed: None,
                deleted: Some(true),
            },
        }
    }
}

/// A mergeable field, as the conflict history names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Title,
    Description,
    Completed,
    /// The deleted flag (`is_deleted`).
    Deleted,
}

impl Field {
    pub const ALL: [Self; 4] = [
        Self::Title,
        Self::Description,
        Self::Completed,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Description => "description",
            Self::Completed => "completed",
            Self::Deleted => "deleted",
        }
    }

    /// The field [`Field::as_str`] spells `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A field a write lost: its stamp is older than the stored one and the values differ. The
/// write's own stamp is the [`Write::stamp`] that was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub field: Field,
    /// The value that stays, and the stamp of the write that set it.
    pub kept: Register<serde_json::Value>,
    /// The value the write wanted.
    pub lost: serde_json::Value,
}

/// What applying one write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// Every field the write set shows the value it wrote (it won them, had won them before,
    /// or a later write set the same value). `false` is a conflict.
    pub won_all: bool,
    /// The state changed.
    pub changed: bool,
    /// The fields it lost, in [`Field::ALL`] order: empty exactly when `won_all`.
    pub lost: Vec<Lost>,
}

/// What offering a value to one register did.
enum Offer {
    /// Written, or held already (the same stamp, or a later write of the same value).
    Held { changed: bool },
    /// A later write holds another value.
    Lost(Register<serde_json::Value>, serde_json::Value),
}

/// Sets `register` to `value` if `stamp` is not older than its stamp. A write holds a field it
/// lost to a later write of the same value, since what it wrote stands.
fn offer<T: PartialEq + Into<serde_json::Value> + Clone>(
    register: &mut Option<Register<T>>,
    value: Option<T>,
    stamp: Stamp,
) -> Offer {
    let Some(value) = value else {
        return Offer::Held { changed: false };
    };
    match register {
        Some(current) if current.stamp > stamp => {
            if current.value == value {
                Offer::Held { changed: false }
            } else {
                let kept = Register {
                    value: current.value.clone().into(),
                    stamp: current.stamp,
                };
                Offer::Lost(kept, value.into())
            }
        }
        // The same stamp is the same operation seen again: it holds the field already.
        Some(current) if current.stamp == stamp => Offer::Held { changed: false },
        _ => {
            *register = Some(Register { value, stamp });
            Offer::Held { changed: true }
        }
    }
}

impl TaskState {
    /// Applies one write under last-write-wins.
    pub fn apply(&mut self, write: &Write) -> Merged {
        let s = write.stamp;
        let offers = [
            (Field::Title, offer(&mut self.title, write.title.clone(), s)),
            (
                Field::Description,
                offer(&mut self.description, write.description.clone(), s),
            ),
            (
                Field::Completed,
                offer(&mut self.completed, write.completed, s),
            ),
            (Field::Deleted, offer(&mut self.deleted, write.deleted, s)),
        ];
        let earlier = self.created_at.is_none_or(|c| s.at < c);
        if earlier {
            self.created_at = Some(s.at);
        }
        let mut changed = earlier;
        let mut lost = Vec::new();
        for (field, offered) in offers {
            match offered {
                Offer::Held { changed: c } => changed |= c,
                Offer::Lost(kept, value) => lost.push(Lost {
                    field,
                    kept,
                    lost: value,
                }),
            }
        }
        Merged {
            won_all: lost.is_empty(),
            changed,
            lost,
        }
    }

    /// The latest of the field stamps' times.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        [
            self.title.as_ref().map(|r| r.stamp.at),
            self.description.as_ref().map(|r| r.stamp.at),
            self.completed.as_ref().map(|r| r.stamp.at),
            self.deleted.as_ref().map(|r| r.stamp.at),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.as_ref().is_some_and(|r| r.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::OperationFields;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn op(n: u128, kind: OpKind, secs: i64, fields: OperationFields) -> Operation {
        Operation {
            op_id: Uuid::from_u128(n),
            task_id: Uuid::from_u128(1),
            user_id: "u".into(),
            kind,
            fields,
            stamped_at: at(secs),
            received_at: at(secs),
            if_absent: false,
            if_match: None,
            device_id: None,
        }
    }

    fn title(t: &str) -> OperationFields {
        OperationFields {
            title: Some(t.into()),
            ..Default::default()
        }
    }

    fn apply_all(ops: &[Operation]) -> (TaskState, Vec<Merged>) {
        let mut state = TaskState::default();
        let merged = ops
            .iter()
            .map(|o| state.apply(&Write::from_operation(o)))
            .collect();
        (state, merged)
    }

    #[test]
    fn edits_of_different_fields_both_survive() {
        let create = op(1, OpKind::Create, 0, title("a"));
        let phone = op(2, OpKind::Update, 10, title("from phone"));
        let laptop = op(
            3,
            OpKind::Update,
            5,
            OperationFields {
                completed: Some(true),
                ..Default::default()
            },
        );
        for order in [[&create, &phone, &laptop], [&laptop, &phone, &create]] {
            let ops: Vec<_> = order.into_iter().cloned().collect();
            let (state, merged) = apply_all(&ops);
            assert_eq!(state.title.as_ref().unwrap().value, "from phone");
            assert!(state.completed.as_ref().unwrap().value);
            // Both edits hold, whichever arrives first.
            let edits = ops
                .iter()
                .zip(&merged)
                .filter(|(o, _)| o.kind == OpKind::Update);
            assert!(edits.clone().count() == 2 && edits.into_iter().all(|(_, m)| m.won_all));
            assert_eq!(state.updated_at(), Some(at(10)));
            assert_eq!(state.created_at, Some(at(0)));
        }
    }

    #[test]
    fn the_later_write_of_one_field_wins_and_the_earlier_reports_a_conflict() {
        let (state, merged) = apply_all(&[
            op(1, OpKind::Create, 0, title("a")),
            op(2, OpKind::Update, 10, title("late")),
            op(3, OpKind::Update, 5, title("early")),
        ]);
        assert_eq!(state.title.unwrap().value, "late");
        assert!(merged[1].won_all);
        assert!(!merged[2].won_all);
        assert!(!merged[2].changed);
    }

    #[test]
    fn a_lost_field_names_the_kept_value_and_stamp_and_the_lost_value() {
        let (_, merged) = apply_all(&[
            op(1, OpKind::Create, 0, title("a")),
            op(2, OpKind::Update, 10, title("late")),
            op(
                3,
                OpKind::Update,
                5,
                OperationFields {
                    title: Some("early".into()),
                    completed: Some(true),
                    ..Default::default()
                },
            ),
        ]);
        assert_eq!(
            merged[2].lost,
            [Lost {
                field: Field::Title,
                kept: Register {
                    value: "late".into(),
                    stamp: Stamp {
                        at: at(10),
                        op_id: Uuid::from_u128(2),
                    },
                },
                lost: "early".into(),
            }],
            "completed won, so only the title is lost"
        );
        assert!(merged[1].lost.is_empty() && merged[0].lost.is_empty());
        // A later write of the same value is no loss; a cleared description is JSON null.
        let clear = |n, secs, d: Option<&str>| {
            op(
                n,
                OpKind::Update,
                secs,
                OperationFields {
                    description: Some(d.map(str::to_string)),
                    ..Default::default()
                },
            )
        };
        let (_, merged) = apply_all(&[
            clear(1, 10, None),
            clear(2, 5, None),
            clear(3, 4, Some("x")),
        ]);
        assert!(merged[1].lost.is_empty() && merged[1].won_all);
        assert_eq!(merged[2].lost.len(), 1);
        assert_eq!(merged[2].lost[0].field, Field::Description);
        assert_eq!(merged[2].lost[0].kept.value, serde_json::Value::Null);
        assert_eq!(merged[2].lost[0].lost, serde_json::json!("x"));
    }

    #[test]
    fn field_names_read_back() {
        for field in Field::ALL {
            assert_eq!(Field::parse(field.as_str()), Some(field));
        }
        assert_eq!(Field::parse("is_deleted"), None);
    }

    #[test]
    fn ties_go_to_the_greater_op_id() {
        for ops in [
            [
                op(7, OpKind::Update, 5, title("seven")),
                op(9, OpKind::Update, 5, title("nine")),
            ],
            [
                op(9, OpKind::Update, 5, title("nine")),
                op(7, OpKind::Update, 5, title("seven")),
            ],
        ] {
            assert_eq!(apply_all(&ops).0.title.unwrap().value, "nine");
        }
    }

    #[test]
    fn a_delete_beats_an_earlier_edit_and_loses_to_a_later_one() {
        let create = op(1, OpKind::Create, 0, title("a"));
        let delete = op(2, OpKind::Delete, 10, OperationFields::default());
        let earlier = op(3, OpKind::Update, 5, title("earlier"));
        let (state, merged) = apply_all(&[create.clone(), delete.clone(), earlier]);
        assert!(state.is_deleted());
        assert!(
            !merged[2].won_all,
            "the earlier edit loses the deleted flag"
        );
        // Its title still merged, and shows if a later edit brings the task back.
        assert_eq!(state.title.as_ref().unwrap().value, "earlier");

        let later = op(
            4,
            OpKind::Update,
            20,
            OperationFields {
                completed: Some(true),
                ..Default::default()
            },
        );
        let (state, merged) = apply_all(&[create, delete, later]);
        assert!(!state.is_deleted());
        assert!(merged[2].won_all);
    }

    #[test]
    fn applying_an_operation_again_changes_nothing_and_still_holds() {
        let o = op(1, OpKind::Create, 0, title("a"));
        let (state, merged) = apply_all(&[o.clone(), o]);
        assert_eq!(state.title.unwrap().value, "a");
        assert!(merged[1].won_all);
        assert!(!merged[1].changed);
    }

    /// (kind, seconds, title, description, completed) of a generated operation.
    type OpSpec = (u8, i64, Option<u8>, Option<Option<u8>>, Option<bool>);

    fn any_op() -> impl Strategy<Value = OpSpec> {
        (
            0u8..3,
            0i64..6, // few distinct times, so ties are common
            proptest::option::of(0u8..4),
            proptest::option::of(proptest::option::of(0u8..4)),
            proptest::option::of(any::<bool>()),
        )
    }

    fn build(specs: &[OpSpec]) -> Vec<Operation> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (kind, secs, t, d, c))| {
                let kind = [OpKind::Create, OpKind::Update, OpKind::Delete][*kind as usize];
                let fields = OperationFields {
                    title: t
                        .map(|t| format!("t{t}"))
                        .or((kind == OpKind::Create).then(|| "c".into())),
                    description: d.map(|d| d.map(|d| format!("d{d}"))),
                    completed: *c,
                };
                // Op ids in a scrambled order, so id order and list order differ.
                op((i as u128 * 7919) % 1009 + 1, kind, *secs, fields)
            })
            .collect()
    }

    fn json<T: Into<serde_json::Value>>(r: Register<T>) -> Register<serde_json::Value> {
        Register {
            value: r.value.into(),
            stamp: r.stamp,
        }
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_give_the_same_task(
            specs in proptest::collection::vec(any_op(), 1..12),
            seed in any::<u64>(),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let ops = build(&specs);
            let (expected, _) = apply_all(&ops);

            let mut shuffled = ops.clone();
            for d in &dups {
                shuffled.push(d.get(&ops).clone());
            }
            // Deterministic Fisher-Yates from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let (actual, _) = apply_all(&shuffled);
            prop_assert_eq!(actual, expected);
        }

        #[test]
        fn merging_two_halves_separately_then_together_is_the_same(
            specs in proptest::collection::vec(any_op(), 1..12),
            split in any::<prop::sample::Index>(),
        ) {
            // Associativity: state(a ++ b) == state(b applied onto state(a)) whatever the split.
            let ops = build(&specs);
            let k = split.index(ops.len() + 1);
            let (whole, _) = apply_all(&ops);
            let (mut part, _) = apply_all(&ops[k..]);
            for o in &ops[..k] {
                part.apply(&Write::from_operation(o));
            }
            prop_assert_eq!(part, whole);
        }

        #[test]
        fn an_operation_succeeds_exactly_when_the_final_task_shows_what_it_wrote(
            specs in proptest::collection::vec(any_op(), 1..10),
            pick in any::<prop::sample::Index>(),
        ) {
            let ops = build(&specs);
            let me = Write::from_operation(pick.get(&ops));
            let writes: Vec<_> = ops.iter().map(Write::from_operation).collect();
            let (last, _) = apply_all(&ops);
            fn shows<T: PartialEq>(mine: &Option<T>, fin: &Option<Register<T>>) -> bool {
                match (mine, fin) {
                    (None, _) => true,
                    (Some(m), Some(f)) => *m == f.value,
                    (Some(_), None) => false,
                }
            }
            let lost = !(shows(&me.title, &last.title)
                && shows(&me.description, &last.description)
                && shows(&me.completed, &last.completed)
                && shows(&me.deleted, &last.deleted));
            // Apply everything else first, then this one: it holds all its fields iff the
            // final task shows what it wrote.
            let mut state = TaskState::default();
            for w in writes.iter().filter(|w| w.stamp != me.stamp) {
                state.apply(w);
            }
            let merged = state.apply(&me);
            prop_assert_eq!(merged.won_all, !lost);
            // It lost exactly the fields it wrote that the final task shows otherwise, each
            // with the final register as the kept value and stamp.
            let expected: Vec<Lost> = [
                (Field::Title, me.title.clone().map(Into::into), last.title.clone().map(json)),
                (
                    Field::Description,
                    me.description.clone().map(Into::into),
                    last.description.clone().map(json),
                ),
                (Field::Completed, me.completed.map(Into::into), last.completed.clone().map(json)),
                (Field::Deleted, me.deleted.map(Into::into), last.deleted.clone().map(json)),
            ]
            .into_iter()
            .filter_map(|(field, mine, kept)| match (mine, kept) {
                (Some(mine), Some(kept)) if mine != kept.value => {
                    Some(Lost { field, kept, lost: mine })
                }
                _ => None,
            })
            .collect();
            prop_assert_eq!(merged.lost, expected);
        }
    }
}
