use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::WasmValue;
use wit_parser::{Function, Resolve, TypeDefKind};

use super::*;

/// A `Vec<u8>`-backed linear memory with a bump allocator as `cabi_realloc`.
struct TestMemory {
    bytes: Vec<u8>,
    next: u32,
    /// Every `(align, size, ptr)` allocation made.
    allocs: Vec<(u32, u32, u32)>,
    /// Makes `realloc` return misaligned pointers, like a broken guest.
    misalign: bool,
}

impl TestMemory {
    fn new(size: usize) -> Self {
        TestMemory {
            bytes: vec![0; size],
            // Keep 0 unused so that a null pointer is never a valid allocation.
            next: 16,
            allocs: Vec::new(),
            misalign: false,
        }
    }

    fn range(&self, offset: u32, len: usize) -> Result<std::ops::Range<usize>, AbiError> {
        let start = offset as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(AbiError::OutOfBounds {
                address: u64::from(offset),
                length: len as u64,
            }),
        }
    }

    fn bytes_at(&self, offset: u32, len: usize) -> &[u8] {
        &self.bytes[offset as usize..offset as usize + len]
    }
}

impl GuestMemory for TestMemory {
    fn read(&self, offset: u32, out: &mut [u8]) -> Result<(), AbiError> {
        let range = self.range(offset, out.len())?;
        out.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), AbiError> {
        let range = self.range(offset, bytes.len())?;
        self.bytes[range].copy_from_slice(bytes);
        Ok(())
    }

    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        assert_eq!((old_ptr, old_size), (0, 0), "the ABI only allocates");
        assert!(
            align.is_power_of_two() && align <= 8,
            "bad alignment {align}"
        );
        let mut ptr = self.next.next_multiple_of(align);
        if self.misalign {
            ptr += 1;
        }
        let end = ptr as usize + new_size as usize;
        if end > self.bytes.len() {
            return Err(AbiError::AllocationFailed {
                size: new_size,
                align,
                reason: "out of test memory".into(),
            });
        }
        self.next = end as u32;
        self.allocs.push((align, new_size, ptr));
        Ok(ptr)
    }
}

const WIT: &str = r#"
package test:abi;

interface t {
    resource counter {
        constructor(start: u64);
        get: func() -> u64;
        add: func(by: u64, label: string) -> result<u64, string>;
    }

    record point { x: s32, y: f32 }
    type alias-point = point;
    type id = u64;
    record person {
        name: string,
        tags: list<string>,
        loc: option<tuple<s32, f32>>,
    }
    variant shape { circle(f32), rect(point), nothing, big(s64), named(string) }
    variant wide { int(s64), float(f32) }
    variant floats { single(f32), double(f64) }
    variant narrow { int(u32), float(f32) }
    enum color { red, green, blue }
    flags small { a, b, c }
    flags medium { m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11 }
    flags word { w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16,
        w17, w18, w19, w20, w21, w22, w23, w24, w25, w26, w27, w28, w29, w30, w31 }
    flags big { b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16,
        b17, b18, b19, b20, b21, b22, b23, b24, b25, b26, b27, b28, b29, b30, b31 }

    ints: func(a: bool, b: u8, c: u16, d: u32, e: u64, f: s8, g: s16, h: s32, i: s64) -> s64;
    ints-result: func() -> u8;
    floats-fn: func(a: f32, b: f64) -> f32;
    chars: func(c: char) -> char;
    strings: func(s: string) -> string;
    bytes: func(b: list<u8>) -> list<u8>;
    lists: func(a: list<u32>, b: list<list<string>>, c: list<f64>) -> list<s16>;
    records: func(p: point, q: alias-point, i: id) -> point;
    people: func(p: list<person>) -> list<person>;
    shapes: func(s: shape) -> shape;
    wides: func(w: wide) -> wide;
    floats-variant: func(f: floats, n: narrow) -> floats;
    options: func(a: option<u8>, b: option<string>, c: option<option<f64>>) -> option<string>;
    results: func(a: result, b: result<u32>, c: result<_, string>, d: result<string, u64>)
        -> result<string, u64>;
    colors: func(c: color) -> color;
    flag-sets: func(a: small, b: medium, c: word, d: big) -> big;
    tuples: func(t: tuple<u8, string, f64>) -> tuple<u8, string, f64>;
    handles: func(a: own<counter>, b: borrow<counter>) -> own<counter>;
    bare-handles: func(c: counter) -> option<counter>;
    maps: func(m: map<string, u32>) -> map<u32, string>;
    fixed: func(a: list<u32, 3>, b: list<list<u8, 2>>) -> list<u16, 4>;
    many: func(a1: u32, a2: u32, a3: u32, a4: u32, a5: u32, a6: u32, a7: u32, a8: u32,
        a9: u32, a10: u32, a11: u32, a12: u32, a13: u32, a14: u32, a15: u32, a16: u32,
        a17: u8) -> u32;
    sixteen: func(a1: u32, a2: u32, a3: u32, a4: u32, a5: u32, a6: u32, a7: u32, a8: u32,
        a9: u32, a10: u32, a11: u32, a12: u32, a13: u32, a14: u32, a15: u32, a16: u32);
    many-strings: func(a: string, b: string, c: string, d: string, e: string, f: string,
        g: string, h: string, i: string) -> tuple<string, string>;
    nothing: func();
    in-memory: func(a: bool, b: s8, c: u16, d: char, e: color, f: small, g: medium, h: word,
        i: option<option<f64>>, j: own<counter>, k: s64, l: u64, m: result, n: wide,
        o: big) -> list<tuple<bool, s8, s16, char, color, small, medium, word, option<u8>>>;
    with-future: func(f: future<u32>);
    with-stream: func() -> stream<u8>;
    with-error-context: func(e: error-context);
}
"#;

fn resolve() -> Resolve {
    let mut resolve = Resolve::new();
    resolve.push_str("test.wit", WIT).expect("test WIT parses");
    // WIT stops at 32 flags, the ABI does not: grow `big` to 40 (b0..b39), two i32 words.
    let (_, big) = resolve
        .types
        .iter_mut()
        .find(|(_, t)| t.name.as_deref() == Some("big"))
        .unwrap();
    let TypeDefKind::Flags(flags) = &mut big.kind else {
        panic!("big is not flags")
    };
    for i in 32..40 {
        let mut flag = flags.flags[0].clone();
        flag.name = format!("b{i}");
        flags.flags.push(flag);
    }
    resolve
}

fn find<'r>(resolve: &'r Resolve, name: &str) -> &'r Function {
    resolve
        .interfaces
        .iter()
        .find_map(|(_, i)| i.functions.get(name))
        .unwrap_or_else(|| panic!("no function {name}"))
}

fn abi(name: &str, direction: Direction) -> FunctionAbi {
    let resolve = resolve();
    FunctionAbi::new(&resolve, find(&resolve, name), direction)
        .unwrap_or_else(|e| panic!("ABI of {name}: {e}"))
}

fn wave(v: &Value) -> String {
    to_wave(v).unwrap()
}

fn waves(vs: &[Value]) -> Vec<String> {
    vs.iter().map(wave).collect()
}

/// Lowers `args` with the export ABI, lifts them with the import ABI from the same memory,
/// and checks that the same values come back. Returns the core args.
fn round_trip_params(
    mem: &mut TestMemory,
    name: &str,
    args: &[&str],
) -> (Vec<CoreValue>, Vec<Value>) {
    let export = abi(name, Direction::Export);
    let import = abi(name, Direction::Import);
    let params = export.parse_params(args).unwrap();
    let core = export.lower_params(mem, &params).unwrap();
    let core_types: Vec<_> = core.iter().map(CoreValue::ty).collect();
    assert_eq!(core_types, export.core_params(), "core params of {name}");

    let mut import_args = core.clone();
    let retptr = import
        .has_retptr()
        .then(|| mem.realloc(0, 0, 8, 256).unwrap());
    if let Some(ptr) = retptr {
        import_args.push(CoreValue::I32(ptr as i32));
    }
    let (lifted, got_retptr) = import.lift_params(mem, &import_args).unwrap();
    assert_eq!(got_retptr, retptr);
    assert_eq!(waves(&lifted), waves(&params), "params of {name}");
    (core, lifted)
}

/// Lowers `result` with the import ABI (flat, or at a return pointer), lifts it with the
/// export ABI and checks that the same value comes back. Returns the lifted value.
fn round_trip_result(mem: &mut TestMemory, name: &str, result: Option<&str>) -> Option<Value> {
    let export = abi(name, Direction::Export);
    let import = abi(name, Direction::Import);
    let value = match (result, import.result_type()) {
        (Some(text), Some(ty)) => Some(parse_wave(ty, text).unwrap()),
        (None, None) => None,
        _ => panic!("result and type of {name} disagree"),
    };
    let retptr = import
        .has_retptr()
        .then(|| mem.realloc(0, 0, 8, 256).unwrap());
    let core = import.lower_result(mem, value.as_ref(), retptr).unwrap();
    let results = match retptr {
        Some(ptr) => {
            assert!(core.is_empty());
            vec![CoreValue::I32(ptr as i32)]
        }
        None => core,
    };
    let core_types: Vec<_> = results.iter().map(CoreValue::ty).collect();
    assert_eq!(core_types, export.core_results(), "core results of {name}");
    let lifted = export.lift_result(mem, &results).unwrap();
    assert_eq!(
        lifted.as_ref().map(wave),
        value.as_ref().map(wave),
        "result of {name}"
    );
    lifted
}

fn round_trip(name: &str, args: &[&str], result: Option<&str>) {
    let mut mem = TestMemory::new(1 << 20);
    round_trip_params(&mut mem, name, args);
    round_trip_result(&mut mem, name, result);
}

#[test]
fn integers_and_bools_round_trip_at_their_limits() {
    round_trip(
        "ints",
        &[
            "true",
            "255",
            "65535",
            "4294967295",
            "18446744073709551615",
            "-128",
            "-32768",
            "-2147483648",
            "-9223372036854775808",
        ],
        Some("-9223372036854775808"),
    );
    round_trip(
        "ints",
        &[
            "false",
            "0",
            "0",
            "0",
            "0",
            "127",
            "32767",
            "2147483647",
            "9223372036854775807",
        ],
        Some("9223372036854775807"),
    );
    round_trip("ints-result", &[], Some("200"));
}

#[test]
fn integers_lower_to_sign_or_zero_extended_i32s() {
    let mut mem = TestMemory::new(1 << 16);
    let (core, _) = round_trip_params(
        &mut mem,
        "ints",
        &[
            "true",
            "255",
            "65535",
            "4294967295",
            "18446744073709551615",
            "-1",
            "-1",
            "-1",
            "-1",
        ],
    );
    assert_eq!(
        core,
        vec![
            CoreValue::I32(1),
            CoreValue::I32(255),
            CoreValue::I32(65535),
            CoreValue::I32(-1),
            CoreValue::I64(-1),
            CoreValue::I32(-1),
            CoreValue::I32(-1),
            CoreValue::I32(-1),
            CoreValue::I64(-1),
        ]
    );
}

#[test]
fn small_integers_lifted_from_i32_ignore_the_upper_bits_and_any_nonzero_is_true() {
    let import = abi("ints", Direction::Import);
    let mem = TestMemory::new(64);
    let args = [
        CoreValue::I32(2),
        CoreValue::I32(0x1ff),
        CoreValue::I32(0x1_0001),
        CoreValue::I32(7),
        CoreValue::I64(7),
        CoreValue::I32(0x180),
        CoreValue::I32(0x1_8000),
        CoreValue::I32(-5),
        CoreValue::I64(-5),
    ];
    let (values, retptr) = import.lift_params(&mem, &args).unwrap();
    assert_eq!(retptr, None);
    assert_eq!(
        waves(&values),
        ["true", "255", "1", "7", "7", "-128", "-32768", "-5", "-5"]
    );
}

#[test]
fn floats_round_trip_including_infinities_and_negative_zero() {
    round_trip("floats-fn", &["1.5", "-2.25"], Some("3.5"));
    round_trip("floats-fn", &["inf", "-inf"], Some("-inf"));
    round_trip("floats-fn", &["-0", "1e300"], Some("-0"));
}

#[test]
fn nans_are_canonicalized_in_both_directions() {
    let import = abi("floats-fn", Direction::Import);
    let export = abi("floats-fn", Direction::Export);
    let mut mem = TestMemory::new(64);
    let args = [
        CoreValue::F32(f32::from_bits(0x7fa0_0001)),
        CoreValue::F64(f64::from_bits(0xfff0_0000_0000_0001)),
    ];
    let (values, _) = import.lift_params(&mem, &args).unwrap();
    assert_eq!(waves(&values), ["nan", "nan"]);
    let core = export.lower_params(&mut mem, &values).unwrap();
    match core[..] {
        [CoreValue::F32(a), CoreValue::F64(b)] => {
            assert_eq!(a.to_bits(), 0x7fc0_0000);
            assert_eq!(b.to_bits(), 0x7ff8_0000_0000_0000);
        }
        _ => panic!("unexpected {core:?}"),
    }
    let nan = Value::make_f32(f32::from_bits(0xffc0_1234));
    let result = import.lower_result(&mut mem, Some(&nan), None).unwrap();
    assert!(matches!(result[..], [CoreValue::F32(x)] if x.to_bits() == 0x7fc0_0000));
}

#[test]
fn chars_round_trip_including_the_largest_scalar_value() {
    round_trip("chars", &["'a'"], Some("'\u{10FFFF}'"));
    round_trip("chars", &["'👋'"], Some("'\\u{0}'"));
}

#[test]
fn strings_round_trip_through_guest_allocations() {
    round_trip("strings", &[r#""hello, wörld 👋""#], Some(r#""""#));
    round_trip(
        "strings",
        &[r#""""#],
        Some(r#""a longer reply with \"quotes\" and\nnewlines""#),
    );
}

#[test]
fn strings_are_allocated_with_alignment_one_and_their_byte_length() {
    let export = abi("strings", Direction::Export);
    let mut mem = TestMemory::new(1024);
    let core = export
        .lower_params(&mut mem, &[Value::make_string("héllo".into())])
        .unwrap();
    let (align, size, ptr) = mem.allocs[0];
    assert_eq!((align, size), (1, 6));
    assert_eq!(core, vec![CoreValue::I32(ptr as i32), CoreValue::I32(6)]);
    assert_eq!(mem.bytes_at(ptr, 6), "héllo".as_bytes());
}

#[test]
fn byte_lists_round_trip_in_bulk() {
    round_trip("bytes", &["[]"], Some("[0, 1, 255]"));
    let big: Vec<String> = (0..100_000u32).map(|i| (i % 251).to_string()).collect();
    let text = format!("[{}]", big.join(", "));
    let mut mem = TestMemory::new(1 << 20);
    let (core, _) = round_trip_params(&mut mem, "bytes", &[&text]);
    let ptr = match core[0] {
        CoreValue::I32(p) => p as u32,
        _ => unreachable!(),
    };
    assert_eq!(core[1], CoreValue::I32(100_000));
    assert_eq!(mem.bytes_at(ptr + 251, 3), &[0, 1, 2]);
    round_trip_result(&mut mem, "bytes", Some(&text));
}

#[test]
fn lists_of_numbers_and_nested_lists_of_strings_round_trip() {
    round_trip(
        "lists",
        &[
            "[1, 2, 4294967295]",
            r#"[[], ["a"], ["bc", "", "déf"]]"#,
            "[1.5, -0, inf]",
        ],
        Some("[-32768, 0, 32767]"),
    );
    round_trip("lists", &["[]", "[]", "[]"], Some("[]"));
}

#[test]
fn records_and_type_aliases_round_trip() {
    round_trip(
        "records",
        &[
            "{x: -1, y: 2.5}",
            "{x: 2147483647, y: -0.125}",
            "18446744073709551615",
        ],
        Some("{x: 7, y: 8.5}"),
    );
}

#[test]
fn nested_list_of_records_with_lists_and_options_round_trips() {
    let people = r#"[
        {name: "ada", tags: ["math", "engines"], loc: some((-3, 1.25))},
        {name: "", tags: [], loc: none},
        {name: "grace 👩‍💻", tags: ["cobol"], loc: some((2147483647, -inf))}
    ]"#;
    round_trip("people", &[people], Some(people));
    round_trip(
        "people",
        &["[]"],
        Some(r#"[{name: "x", tags: [""], loc: none}]"#),
    );
}

#[test]
fn variants_round_trip_every_case() {
    for (arg, result) in [
        ("circle(1.5)", "nothing"),
        ("rect({x: 1, y: -2})", "big(-9223372036854775808)"),
        ("nothing", "named(\"n\")"),
        ("big(9223372036854775807)", "circle(-0.5)"),
        (r#"named("a name")"#, "rect({x: -7, y: 0.25})"),
    ] {
        round_trip("shapes", &[arg], Some(result));
    }
}

#[test]
fn variant_of_i64_and_f32_joins_to_i64_with_the_float_bits_zero_extended() {
    let export = abi("wides", Direction::Export);
    assert_eq!(export.core_params(), [CoreType::I32, CoreType::I64]);
    let mut mem = TestMemory::new(1024);
    let float = export.parse_params(&["float(1.5)"]).unwrap();
    assert_eq!(
        export.lower_params(&mut mem, &float).unwrap(),
        vec![
            CoreValue::I32(1),
            CoreValue::I64(i64::from(1.5f32.to_bits()))
        ]
    );
    let int = export.parse_params(&["int(-2)"]).unwrap();
    assert_eq!(
        export.lower_params(&mut mem, &int).unwrap(),
        vec![CoreValue::I32(0), CoreValue::I64(-2)]
    );
    round_trip("wides", &["float(-1.5)"], Some("int(-9223372036854775808)"));
    round_trip("wides", &["int(9223372036854775807)"], Some("float(inf)"));

    // Lifting a float case takes the low 32 bits of the joined i64.
    let import = abi("wides", Direction::Import);
    let bits = i64::from(2.5f32.to_bits()) | (0x1234 << 40);
    let args = [CoreValue::I32(1), CoreValue::I64(bits), CoreValue::I32(16)];
    let (values, retptr) = import.lift_params(&mem, &args).unwrap();
    assert_eq!(waves(&values), ["float(2.5)"]);
    assert_eq!(retptr, Some(16));
}

#[test]
fn variant_of_f32_and_f64_joins_to_i64_and_of_u32_and_f32_to_i32() {
    let export = abi("floats-variant", Direction::Export);
    assert_eq!(
        export.core_params(),
        [CoreType::I32, CoreType::I64, CoreType::I32, CoreType::I32]
    );
    let mut mem = TestMemory::new(1024);
    let params = export
        .parse_params(&["single(-1.0)", "float(0.5)"])
        .unwrap();
    assert_eq!(
        export.lower_params(&mut mem, &params).unwrap(),
        vec![
            CoreValue::I32(0),
            CoreValue::I64(i64::from((-1.0f32).to_bits())),
            CoreValue::I32(1),
            CoreValue::I32(0.5f32.to_bits() as i32),
        ]
    );
    round_trip(
        "floats-variant",
        &["double(1e-300)", "int(4294967295)"],
        Some("single(3.25)"),
    );
    round_trip(
        "floats-variant",
        &["single(nan)", "float(-inf)"],
        Some("double(-2.5)"),
    );
}

#[test]
fn options_round_trip_including_nested_options() {
    round_trip(
        "options",
        &["some(255)", r#"some("x")"#, "some(some(1.5))"],
        Some("none"),
    );
    round_trip(
        "options",
        &["none", "none", "some(none)"],
        Some(r#"some("")"#),
    );
    round_trip(
        "options",
        &["some(0)", r#"some("")"#, "none"],
        Some(r#"some("yes")"#),
    );
}

#[test]
fn results_with_and_without_payloads_round_trip() {
    round_trip(
        "results",
        &["ok", "ok(4294967295)", "ok", r#"ok("fine")"#],
        Some(r#"ok("good")"#),
    );
    round_trip(
        "results",
        &["err", "err", r#"err("bad")"#, "err(18446744073709551615)"],
        Some("err(42)"),
    );
}

#[test]
fn enums_round_trip_and_lower_to_their_index() {
    round_trip("colors", &["green"], Some("blue"));
    let export = abi("colors", Direction::Export);
    let mut mem = TestMemory::new(64);
    let blue = export.parse_params(&["blue"]).unwrap();
    assert_eq!(
        export.lower_params(&mut mem, &blue).unwrap(),
        vec![CoreValue::I32(2)]
    );
}

#[test]
fn flags_of_every_size_round_trip_including_none_and_all_set() {
    let all_big: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
    let all_big = format!("{{{}}}", all_big.join(", "));
    round_trip(
        "flag-sets",
        &["{a, c}", "{m0, m11}", "{w0, w31}", "{b0, b31, b32, b39}"],
        Some(&all_big),
    );
    round_trip("flag-sets", &["{}", "{}", "{}", "{}"], Some("{}"));
    round_trip(
        "flag-sets",
        &["{a, b, c}", "{m5}", "{w16}", &all_big],
        Some("{b33}"),
    );
}

#[test]
fn forty_flags_use_two_i32_words() {
    let export = abi("flag-sets", Direction::Export);
    assert_eq!(export.core_params(), [CoreType::I32; 5]);
    let mut mem = TestMemory::new(64);
    let params = export
        .parse_params(&["{b}", "{m9}", "{w31}", "{b1, b32, b39}"])
        .unwrap();
    assert_eq!(
        export.lower_params(&mut mem, &params).unwrap(),
        vec![
            CoreValue::I32(0b10),
            CoreValue::I32(1 << 9),
            CoreValue::I32(i32::MIN),
            CoreValue::I32(0b10),
            CoreValue::I32(0b1000_0001),
        ]
    );
}

#[test]
fn forty_flags_are_stored_as_two_words_in_the_result_area() {
    let import = abi("flag-sets", Direction::Import);
    assert!(import.has_retptr());
    let mut mem = TestMemory::new(256);
    let value = parse_wave(import.result_type().unwrap(), "{b0, b33}").unwrap();
    import
        .lower_result(&mut mem, Some(&value), Some(64))
        .unwrap();
    assert_eq!(mem.bytes_at(64, 8), &[1, 0, 0, 0, 2, 0, 0, 0]);
}

#[test]
fn tuples_round_trip() {
    round_trip(
        "tuples",
        &[r#"(255, "tuple", -1.5)"#],
        Some(r#"(0, "", 1e300)"#),
    );
}

#[test]
fn resource_handles_are_u32_values_passed_as_i32() {
    let export = abi("handles", Direction::Export);
    assert_eq!(export.param_types(), [Type::U32, Type::U32]);
    assert_eq!(export.result_type(), Some(&Type::U32));
    assert_eq!(export.core_params(), [CoreType::I32, CoreType::I32]);
    round_trip("handles", &["1", "4294967295"], Some("7"));
}

#[test]
fn bare_resource_names_are_owned_handles() {
    let export = abi("bare-handles", Direction::Export);
    assert_eq!(export.param_types(), [Type::U32]);
    round_trip("bare-handles", &["3"], Some("some(9)"));
}

#[test]
fn resource_methods_take_the_handle_as_their_first_param() {
    for direction in [Direction::Export, Direction::Import] {
        let add = abi("[method]counter.add", direction);
        assert_eq!(add.param_names(), ["self", "by", "label"]);
        assert_eq!(add.param_types()[0], Type::U32);
        let constructor = abi("[constructor]counter", direction);
        assert_eq!(constructor.result_type(), Some(&Type::U32));
    }
    round_trip(
        "[method]counter.add",
        &["1", "2", r#""two""#],
        Some(r#"err("full")"#),
    );
    round_trip("[method]counter.get", &["1"], Some("18446744073709551615"));
    round_trip("[constructor]counter", &["5"], Some("1"));
}

#[test]
fn function_abis_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<FunctionAbi>();
}

#[test]
fn maps_round_trip_as_lists_of_key_value_tuples() {
    round_trip(
        "maps",
        &[r#"{"one": 1, "two": 2}"#],
        Some(r#"{1: "one", 4294967295: "max"}"#),
    );
    round_trip("maps", &["{}"], Some("{}"));
}

#[test]
fn map_entries_are_laid_out_like_tuples() {
    let import = abi("maps", Direction::Import);
    let mut mem = TestMemory::new(1024);
    let value = parse_wave(import.result_type().unwrap(), r#"{5: "ab"}"#).unwrap();
    import
        .lower_result(&mut mem, Some(&value), Some(64))
        .unwrap();
    let ptr = u32::from_le_bytes(mem.bytes_at(64, 4).try_into().unwrap());
    assert_eq!(mem.bytes_at(68, 4), &[1, 0, 0, 0]);
    // tuple<u32, string>: key at 0, string (ptr, len) at 4, 12 bytes.
    assert_eq!(mem.bytes_at(ptr, 4), &[5, 0, 0, 0]);
    let sptr = u32::from_le_bytes(mem.bytes_at(ptr + 4, 4).try_into().unwrap());
    assert_eq!(mem.bytes_at(ptr + 8, 4), &[2, 0, 0, 0]);
    assert_eq!(mem.bytes_at(sptr, 2), b"ab");
}

#[test]
fn fixed_length_lists_are_flattened_inline_and_need_exact_lengths() {
    let export = abi("fixed", Direction::Export);
    assert_eq!(export.core_params(), [CoreType::I32; 5]);
    round_trip(
        "fixed",
        &["[1, 2, 3]", "[[1, 2], [3, 4]]"],
        Some("[1, 2, 3, 65535]"),
    );
    let mut mem = TestMemory::new(1024);
    let short = vec![
        parse_wave(&export.param_types()[0], "[1, 2]").unwrap(),
        parse_wave(&export.param_types()[1], "[]").unwrap(),
    ];
    let err = export.lower_params(&mut mem, &short).unwrap_err();
    assert!(
        err.to_string().contains("exactly 3 elements"),
        "unexpected error: {err}"
    );
}

#[test]
fn more_than_sixteen_flat_params_go_through_a_host_allocated_tuple() {
    let export = abi("many", Direction::Export);
    let import = abi("many", Direction::Import);
    assert!(export.indirect_params() && import.indirect_params());
    assert_eq!(export.core_params(), [CoreType::I32]);
    assert_eq!(import.core_params(), [CoreType::I32]);
    assert_eq!(export.core_results(), [CoreType::I32]);

    let mut args: Vec<String> = (1..=16).map(|i| (i * 1000).to_string()).collect();
    args.push("170".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut mem = TestMemory::new(4096);
    let (core, _) = round_trip_params(&mut mem, "many", &args);
    // 16 u32s and a u8: 65 bytes, padded to 68, aligned to 4.
    let (align, size, ptr) = mem.allocs[0];
    assert_eq!((align, size), (4, 68));
    assert_eq!(core, vec![CoreValue::I32(ptr as i32)]);
    assert_eq!(mem.bytes_at(ptr + 4, 4), &2000u32.to_le_bytes());
    assert_eq!(mem.bytes_at(ptr + 64, 1), &[170]);
    round_trip_result(&mut mem, "many", Some("4000000000"));
}

#[test]
fn exactly_sixteen_flat_params_stay_flat() {
    let export = abi("sixteen", Direction::Export);
    assert!(!export.indirect_params());
    assert_eq!(export.core_params(), [CoreType::I32; 16]);
    let args: Vec<String> = (1..=16).map(|i| i.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    round_trip("sixteen", &args, None);
}

#[test]
fn many_strings_go_indirect_and_the_import_gets_a_retptr_after_the_params_pointer() {
    let import = abi("many-strings", Direction::Import);
    assert!(import.indirect_params() && import.has_retptr());
    assert_eq!(import.core_params(), [CoreType::I32, CoreType::I32]);
    assert!(import.core_results().is_empty());
    let args = [
        "\"a\"", "\"bb\"", "\"\"", "\"d\"", "\"e\"", "\"f\"", "\"g\"", "\"h\"", "\"ï\"",
    ];
    round_trip("many-strings", &args, Some(r#"("x", "yz")"#));
}

#[test]
fn results_wider_than_one_flat_value_go_through_memory() {
    let export = abi("strings", Direction::Export);
    let import = abi("strings", Direction::Import);
    assert!(export.has_retptr() && import.has_retptr());
    assert_eq!(export.core_results(), [CoreType::I32]);
    assert_eq!(
        import.core_params(),
        [CoreType::I32, CoreType::I32, CoreType::I32]
    );
    assert!(import.core_results().is_empty());

    let mut mem = TestMemory::new(1024);
    let value = Value::make_string("hi".into());
    assert!(import
        .lower_result(&mut mem, Some(&value), Some(32))
        .unwrap()
        .is_empty());
    let ptr = u32::from_le_bytes(mem.bytes_at(32, 4).try_into().unwrap());
    assert_eq!(mem.bytes_at(36, 4), &[2, 0, 0, 0]);
    assert_eq!(mem.bytes_at(ptr, 2), b"hi");
    let lifted = export.lift_result(&mem, &[CoreValue::I32(32)]).unwrap();
    assert_eq!(lifted.map(|v| wave(&v)), Some("\"hi\"".to_string()));
}

#[test]
fn result_area_layout_follows_size_align() {
    // result<string, u64>: u8 tag, payload at 8 (u64 alignment), 16 bytes.
    let import = abi("results", Direction::Import);
    let mut mem = TestMemory::new(1024);
    let value = parse_wave(import.result_type().unwrap(), "err(258)").unwrap();
    import
        .lower_result(&mut mem, Some(&value), Some(64))
        .unwrap();
    assert_eq!(
        mem.bytes_at(64, 16),
        &[1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]
    );

    // point { x: s32, y: f32 }.
    let import = abi("records", Direction::Import);
    let value = parse_wave(import.result_type().unwrap(), "{x: -1, y: 1.0}").unwrap();
    import
        .lower_result(&mut mem, Some(&value), Some(128))
        .unwrap();
    assert_eq!(mem.bytes_at(128, 4), &[0xff; 4]);
    assert_eq!(mem.bytes_at(132, 4), &1.0f32.to_le_bytes());
}

#[test]
fn every_small_type_round_trips_through_memory_too() {
    let export = abi("in-memory", Direction::Export);
    assert!(export.indirect_params() && export.has_retptr());
    round_trip(
        "in-memory",
        &[
            "true",
            "-128",
            "65535",
            "'ß'",
            "blue",
            "{a, c}",
            "{m11}",
            "{w0, w31}",
            "some(some(-0.5))",
            "4294967295",
            "-1",
            "18446744073709551615",
            "err",
            "float(0.75)",
            "{b0, b39}",
        ],
        Some(
            "[(true, -1, -32768, '\\u{10ffff}', red, {}, {m0, m8}, {w31}, some(255)), \
              (false, 127, 32767, 'z', green, {b}, {}, {}, none)]",
        ),
    );
    round_trip(
        "in-memory",
        &[
            "false",
            "127",
            "0",
            "'\\u{0}'",
            "red",
            "{}",
            "{}",
            "{}",
            "some(none)",
            "0",
            "9223372036854775807",
            "0",
            "ok",
            "int(-9223372036854775808)",
            "{}",
        ],
        Some("[]"),
    );
}

#[test]
fn any_nonzero_byte_is_a_true_bool_in_memory() {
    let export = abi("in-memory", Direction::Export);
    let import = abi("in-memory", Direction::Import);
    let mut mem = TestMemory::new(4096);
    let params = export
        .parse_params(&[
            "false", "0", "0", "'a'", "red", "{}", "{}", "{}", "none", "0", "0", "0", "ok",
            "int(0)", "{}",
        ])
        .unwrap();
    let core = export.lower_params(&mut mem, &params).unwrap();
    let CoreValue::I32(ptr) = core[0] else {
        panic!("expected a pointer, got {core:?}")
    };
    mem.write(ptr as u32, &[0x80]).unwrap();
    let (values, _) = import
        .lift_params(&mem, &[core[0], CoreValue::I32(2048)])
        .unwrap();
    assert_eq!(wave(&values[0]), "true");
}

#[test]
fn functions_without_params_or_results_have_empty_signatures() {
    let export = abi("nothing", Direction::Export);
    assert!(export.core_params().is_empty() && export.core_results().is_empty());
    round_trip("nothing", &[], None);
}

#[test]
fn post_return_is_named_after_the_export() {
    assert_eq!(
        post_return_name("test:abi/t#strings"),
        "cabi_post_test:abi/t#strings"
    );
}

// ------------------------------------------------------------------------------------------
// Errors: the guest is untrusted, the host may pass the wrong values.

#[test]
fn out_of_bounds_string_pointer_is_an_error_with_address_and_length() {
    let import = abi("strings", Direction::Import);
    let mem = TestMemory::new(1024);
    let err = import
        .lift_params(
            &mem,
            &[CoreValue::I32(1000), CoreValue::I32(100), CoreValue::I32(0)],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::OutOfBounds {
                address: 1000,
                length: 100
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("0x3e8"), "{err}");
    let err = import
        .lift_params(
            &mem,
            &[CoreValue::I32(-4), CoreValue::I32(8), CoreValue::I32(0)],
        )
        .unwrap_err();
    assert!(matches!(err, AbiError::OutOfBounds { .. }), "{err}");
}

#[test]
fn huge_list_length_is_rejected_without_allocating_it() {
    let import = abi("lists", Direction::Import);
    let mem = TestMemory::new(1024);
    let args = [
        CoreValue::I32(16),
        CoreValue::I32(0x3fff_ffff),
        CoreValue::I32(16),
        CoreValue::I32(0),
        CoreValue::I32(16),
        CoreValue::I32(0),
        CoreValue::I32(64),
    ];
    let err = import.lift_params(&mem, &args).unwrap_err();
    assert!(
        matches!(err, AbiError::OutOfBounds { address: 16, length } if length == 0x3fff_ffff * 4),
        "{err}"
    );
}

#[test]
fn out_of_bounds_result_pointer_is_an_error() {
    let export = abi("strings", Direction::Export);
    let mem = TestMemory::new(1024);
    let err = export
        .lift_result(&mem, &[CoreValue::I32(1020)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::OutOfBounds {
                address: 1020,
                length: 8
            }
        ),
        "{err}"
    );
    let import = abi("strings", Direction::Import);
    let mut mem = TestMemory::new(1024);
    let err = import
        .lower_result(&mut mem, Some(&Value::make_string("x".into())), Some(4096))
        .unwrap_err();
    assert!(matches!(err, AbiError::OutOfBounds { .. }), "{err}");
}

#[test]
fn misaligned_pointers_are_rejected() {
    let import = abi("lists", Direction::Import);
    let mem = TestMemory::new(1024);
    let args = [
        CoreValue::I32(18),
        CoreValue::I32(1),
        CoreValue::I32(16),
        CoreValue::I32(0),
        CoreValue::I32(16),
        CoreValue::I32(0),
        CoreValue::I32(64),
    ];
    let err = import.lift_params(&mem, &args).unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::MisalignedPointer {
                address: 18,
                align: 4,
                ..
            }
        ),
        "{err}"
    );
    let export = abi("results", Direction::Export);
    let err = export.lift_result(&mem, &[CoreValue::I32(4)]).unwrap_err();
    assert!(
        matches!(err, AbiError::MisalignedPointer { align: 8, .. }),
        "{err}"
    );
}

#[test]
fn misaligned_guest_allocation_is_an_allocation_failure() {
    let export = abi("lists", Direction::Export);
    let mut mem = TestMemory::new(1024);
    mem.misalign = true;
    let params = export.parse_params(&["[1]", "[]", "[]"]).unwrap();
    let err = export.lower_params(&mut mem, &params).unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::AllocationFailed {
                align: 4,
                size: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn failing_guest_allocation_is_reported() {
    let export = abi("bytes", Direction::Export);
    let mut mem = TestMemory::new(64);
    let params = export.parse_params(&["[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49]"]).unwrap();
    let err = export.lower_params(&mut mem, &params).unwrap_err();
    assert!(
        matches!(err, AbiError::AllocationFailed { size: 49, .. }),
        "{err}"
    );
}

#[test]
fn invalid_utf8_from_the_guest_is_an_error() {
    let import = abi("strings", Direction::Import);
    let mut mem = TestMemory::new(1024);
    mem.write(100, &[b'o', b'k', 0xff, 0xfe]).unwrap();
    let err = import
        .lift_params(
            &mem,
            &[CoreValue::I32(100), CoreValue::I32(4), CoreValue::I32(0)],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::InvalidUtf8 {
                address: 100,
                length: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn surrogates_and_values_above_the_unicode_range_are_invalid_chars() {
    let import = abi("chars", Direction::Import);
    let mem = TestMemory::new(64);
    for bad in [0xd800u32, 0xdfff, 0x11_0000, u32::MAX] {
        let err = import
            .lift_params(&mem, &[CoreValue::I32(bad as i32)])
            .unwrap_err();
        assert!(
            matches!(err, AbiError::InvalidChar { value } if value == bad),
            "{err}"
        );
    }
}

#[test]
fn out_of_range_discriminants_are_errors_naming_the_type() {
    let import = abi("shapes", Direction::Import);
    let mem = TestMemory::new(64);
    let mut args = vec![CoreValue::I32(5), CoreValue::I64(0), CoreValue::I32(0)];
    args.push(CoreValue::I32(16));
    let err = import.lift_params(&mem, &args).unwrap_err();
    assert!(
        matches!(&err, AbiError::InvalidDiscriminant { ty, value: 5, cases: 5 } if ty == "shape"),
        "{err}"
    );

    let import = abi("colors", Direction::Import);
    let err = import.lift_params(&mem, &[CoreValue::I32(3)]).unwrap_err();
    assert!(
        matches!(err, AbiError::InvalidDiscriminant { value: 3, .. }),
        "{err}"
    );

    // option<string> in a result area, with tag 2.
    let export = abi("options", Direction::Export);
    let mut mem = TestMemory::new(64);
    mem.write(16, &[2]).unwrap();
    let err = export.lift_result(&mem, &[CoreValue::I32(16)]).unwrap_err();
    assert!(
        matches!(&err, AbiError::InvalidDiscriminant { ty, value: 2, .. } if ty == "option<string>"),
        "{err}"
    );
}

#[test]
fn wrong_number_of_params_is_an_error() {
    let export = abi("records", Direction::Export);
    let mut mem = TestMemory::new(64);
    let err = export
        .lower_params(&mut mem, &[Value::make_u64(1)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::WrongParamCount {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = export.parse_params(&["1"]).unwrap_err();
    assert!(matches!(err, AbiError::WrongParamCount { .. }), "{err}");
}

#[test]
fn wrong_number_or_type_of_core_values_is_an_error() {
    let import = abi("records", Direction::Import);
    let mem = TestMemory::new(64);
    let err = import.lift_params(&mem, &[CoreValue::I32(1)]).unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::WrongCoreCount {
                expected: 6,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    let args = [
        CoreValue::I32(1),
        CoreValue::I32(2),
        CoreValue::I32(3),
        CoreValue::F32(4.0),
        CoreValue::I64(5),
        CoreValue::I32(8),
    ];
    let err = import.lift_params(&mem, &args).unwrap_err();
    assert!(
        matches!(
            err,
            AbiError::WrongCoreType {
                index: 1,
                expected: CoreType::F32,
                got: CoreType::I32,
                ..
            }
        ),
        "{err}"
    );
    let export = abi("floats-fn", Direction::Export);
    let err = export
        .lift_result(&mem, &[CoreValue::F64(1.0)])
        .unwrap_err();
    assert!(matches!(err, AbiError::WrongCoreType { .. }), "{err}");
}

#[test]
fn value_of_the_wrong_type_names_the_param_and_expected_type() {
    let export = abi("strings", Direction::Export);
    let mut mem = TestMemory::new(64);
    let err = export
        .lower_params(&mut mem, &[Value::make_u32(3)])
        .unwrap_err();
    match &err {
        AbiError::WrongParamType {
            index: 0,
            name,
            expected,
            detail,
            ..
        } => {
            assert_eq!(name, "s");
            assert_eq!(expected, "string");
            assert!(detail.contains("u32"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        mem.allocs.is_empty(),
        "nothing is allocated for ill-typed params"
    );
}

#[test]
fn nested_type_mismatch_reports_the_path_inside_the_value() {
    let person = abi("people", Direction::Export);
    // A list<person> value whose second person's `tags` is a list<u32>.
    let other = {
        let mut r = Resolve::new();
        r.push_str(
            "other.wit",
            "package test:other;
             interface o {
                 record person { name: string, tags: list<u32>, loc: option<tuple<s32, f32>> }
                 f: func(p: list<person>);
             }",
        )
        .unwrap();
        let func = r
            .interfaces
            .iter()
            .find_map(|(_, i)| i.functions.get("f"))
            .unwrap();
        FunctionAbi::new(&r, func, Direction::Export).unwrap()
    };
    let bad = parse_wave(
        &other.param_types()[0],
        r#"[{name: "a", tags: [], loc: none}, {name: "b", tags: [1], loc: none}]"#,
    )
    .unwrap();
    let mut mem = TestMemory::new(1024);
    let err = person.lower_params(&mut mem, &[bad]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`[1].tags[0]`"), "{text}");
    assert!(text.contains("expected `string`"), "{text}");
}

#[test]
fn unknown_variant_case_and_record_field_mismatches_are_errors() {
    let resolve = {
        let mut r = Resolve::new();
        r.push_str(
            "other.wit",
            "package test:other;
             interface o {
                 variant shape { circle(f32), square(f32) }
                 record point { x: s32, z: f32 }
                 f: func(s: shape, p: point);
             }",
        )
        .unwrap();
        r
    };
    let func = resolve
        .interfaces
        .iter()
        .find_map(|(_, i)| i.functions.get("f"))
        .unwrap();
    let other = FunctionAbi::new(&resolve, func, Direction::Export).unwrap();
    let square = parse_wave(&other.param_types()[0], "square(1.0)").unwrap();
    let point = parse_wave(&other.param_types()[1], "{x: 1, z: 2.0}").unwrap();

    let shapes = abi("shapes", Direction::Export);
    let mut mem = TestMemory::new(1024);
    let err = shapes.lower_params(&mut mem, &[square]).unwrap_err();
    assert!(err.to_string().contains("no such case"), "{err}");

    let records = abi("records", Direction::Export);
    let err = records
        .lower_params(&mut mem, &[point.clone(), point, Value::make_u64(1)])
        .unwrap_err();
    assert!(err.to_string().contains("fields {x, y}"), "{err}");
}

#[test]
fn missing_unexpected_or_ill_typed_results_are_errors() {
    let import = abi("strings", Direction::Import);
    let mut mem = TestMemory::new(64);
    let err = import.lower_result(&mut mem, None, Some(16)).unwrap_err();
    assert!(matches!(err, AbiError::MissingResult { .. }), "{err}");
    let err = import
        .lower_result(&mut mem, Some(&Value::make_bool(true)), Some(16))
        .unwrap_err();
    assert!(matches!(err, AbiError::WrongResultType { .. }), "{err}");
    let err = import
        .lower_result(&mut mem, Some(&Value::make_string("x".into())), None)
        .unwrap_err();
    assert!(matches!(err, AbiError::MissingRetptr { .. }), "{err}");
    let err = import
        .lower_result(&mut mem, Some(&Value::make_string("x".into())), Some(17))
        .unwrap_err();
    assert!(
        matches!(err, AbiError::MisalignedPointer { address: 17, .. }),
        "{err}"
    );

    let nothing = abi("nothing", Direction::Import);
    let err = nothing
        .lower_result(&mut mem, Some(&Value::make_bool(true)), None)
        .unwrap_err();
    assert!(matches!(err, AbiError::UnexpectedResult { .. }), "{err}");
    let colors = abi("colors", Direction::Import);
    let blue = parse_wave(colors.result_type().unwrap(), "blue").unwrap();
    let err = colors
        .lower_result(&mut mem, Some(&blue), Some(16))
        .unwrap_err();
    assert!(matches!(err, AbiError::UnexpectedRetptr { .. }), "{err}");
}

#[test]
fn calling_a_method_for_the_other_direction_is_an_error() {
    let export = abi("colors", Direction::Export);
    let mem = TestMemory::new(64);
    let err = export.lift_params(&mem, &[CoreValue::I32(0)]).unwrap_err();
    assert!(matches!(err, AbiError::WrongDirection { .. }), "{err}");
    let import = abi("colors", Direction::Import);
    let err = import.lift_result(&mem, &[CoreValue::I32(0)]).unwrap_err();
    assert!(matches!(err, AbiError::WrongDirection { .. }), "{err}");
}

#[test]
fn futures_streams_and_error_contexts_are_unsupported() {
    let resolve = resolve();
    for name in ["with-future", "with-stream", "with-error-context"] {
        let err = FunctionAbi::new(&resolve, find(&resolve, name), Direction::Export).unwrap_err();
        assert!(
            matches!(err, AbiError::UnsupportedType { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn wave_parse_errors_name_the_param_and_the_problem() {
    let export = abi("records", Direction::Export);
    let err = export
        .parse_params(&["{x: 1, y: 2.0}", "{x: 1}", "5"])
        .unwrap_err();
    match &err {
        AbiError::WaveParam {
            index: 1, name, ty, ..
        } => {
            assert_eq!(name, "q");
            assert!(ty.contains("x: s32"), "{ty}");
        }
        other => panic!("unexpected {other}"),
    }
    let err = parse_wave(&Type::U8, "256").unwrap_err();
    assert!(matches!(err, AbiError::WaveParse { .. }), "{err}");
    assert!(err.to_string().contains("u8"), "{err}");
}

#[test]
fn wave_text_round_trips() {
    let ty = abi("people", Direction::Export).param_types()[0].clone();
    let text = r#"[{name: "a", tags: ["x"], loc: some((1, 2.5))}]"#;
    let value = parse_wave(&ty, text).unwrap();
    assert_eq!(to_wave(&value).unwrap(), text);
}
