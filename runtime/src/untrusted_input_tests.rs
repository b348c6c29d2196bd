//! Property tests: what a guest, a client or a damaged disk hands the runtime never makes it
//! panic or loop. Random and mutated oplog blocks, records, wit-value trees, call results,
//! worker URIs and WAVE text are decoded; each must come back as a value or an error.

use proptest::prelude::*;
use wasm_wave::value::Type;

use crate::oplog::store::{decode_block, BlockEncoder, BlockRead};
use crate::oplog::{HostFunction, HostValue, LogStream, OplogEntry};
use crate::wit_value::{Node, WitValue};

fn entries(n: usize) -> Vec<OplogEntry> {
    (0..n)
        .map(|i| match i % 3 {
            0 => OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::ClockTimeGet,
                request: HostValue::U64(i as u64),
                response: HostValue::Errno(0, 1_700_000_000 + i as u64),
            },
            1 => OplogEntry::Log {
                stream: LogStream::Stdout,
                bytes: vec![b'x'; i],
            },
            _ => OplogEntry::NoOp,
        })
        .collect()
}

/// A type with every kind of nesting a tree can be read against.
fn nested_type() -> Type {
    let inner = Type::record([
        ("a", Type::list(Type::U8)),
        ("b", Type::option(Type::STRING)),
        ("c", Type::result(Some(Type::S32), None)),
    ])
    .unwrap();
    Type::list(
        Type::tuple(vec![
            inner,
            Type::variant([("x", Some(Type::U64)), ("y", None)]).unwrap(),
        ])
        .unwrap(),
    )
}

fn node() -> impl Strategy<Value = Node> {
    let index = -2i32..12;
    prop_oneof![
        proptest::collection::vec(index.clone(), 0..4).prop_map(Node::Record),
        (0u32..4, proptest::option::of(index.clone())).prop_map(|(c, i)| Node::Variant(c, i)),
        (0u32..4).prop_map(Node::Enum),
        proptest::collection::vec(any::<bool>(), 0..4).prop_map(Node::Flags),
        proptest::collection::vec(index.clone(), 0..4).prop_map(Node::Tuple),
        proptest::collection::vec(index.clone(), 0..4).prop_map(Node::List),
        proptest::option::of(index.clone()).prop_map(Node::Option),
        any::<u8>().prop_map(Node::U8),
        any::<u64>().prop_map(Node::U64),
        any::<i32>().prop_map(Node::S32),
        ".{0,8}".prop_map(Node::String),
        any::<bool>().prop_map(Node::Bool),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_oplog_blocks_decode_or_are_reported_corrupt(bytes in proptest::collection::vec(any::<u8>(), 0..512), last in 1u64..1000) {
        let _ = decode_block(&bytes, last);
    }

    #[test]
    fn a_damaged_block_is_reported_never_misread(n in 1usize..40, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let entries = entries(n);
        let mut block = BlockEncoder::default().encode(&entries);
        let at = at.index(block.len());
        block[at] ^= flip;
        match decode_block(&block, n as u64) {
            BlockRead::Entries(decoded) => {
                // Only a change the checksum cannot see could decode, and then to the same.
                let decoded: Vec<OplogEntry> = decoded.into_iter().map(|(_, e)| e).collect();
                prop_assert_eq!(decoded, entries);
            }
            BlockRead::Corrupt { .. } => {}
        }
    }

    #[test]
    fn random_records_fail_their_checksum_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::storage::codec::decode::<crate::worker_records::WorkerRecord>(&bytes, "worker record");
    }

    #[test]
    fn random_trees_read_against_a_type_never_panic(nodes in proptest::collection::vec(node(), 0..12)) {
        let _ = WitValue { nodes }.to_typed(&nested_type());
    }

    #[test]
    fn random_call_results_and_uris_never_panic(text in ".{0,64}") {
        let _ = crate::rpc::parse_call_result(&text);
        let _ = crate::ids::WorkerId::from_uri(&text);
        let _ = crate::ids::url_decode(&text);
        let _ = crate::abi::parse_wave(&nested_type(), &text);
    }

    #[test]
    fn deep_wave_is_refused_not_overflowed(depth in 50usize..5000) {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let ty = (0..depth.min(200)).fold(Type::U8, |t, _| Type::list(t));
        let _ = crate::abi::parse_wave(&ty, &text);
    }
}
