//! Round trips of every kind of WIT value through the canonical ABI.

wit_bindgen::generate!({
    world: "golemw:types/types",
    path: "wit",
});

use exports::golemw::types::api::{Big, BigFlags, Color, Guest, Item, Mixed, Shape, SmallFlags};

struct Types;

impl Guest for Types {
    fn echo_bool(x: bool) -> bool {
        x
    }
    fn echo_u8(x: u8) -> u8 {
        x
    }
    fn echo_u16(x: u16) -> u16 {
        x
    }
    fn echo_u32(x: u32) -> u32 {
        x
    }
    fn echo_u64(x: u64) -> u64 {
        x
    }
    fn echo_s8(x: i8) -> i8 {
        x
    }
    fn echo_s16(x: i16) -> i16 {
        x
    }
    fn echo_s32(x: i32) -> i32 {
        x
    }
    fn echo_s64(x: i64) -> i64 {
        x
    }
    fn echo_f32(x: f32) -> f32 {
        x
    }
    fn echo_f64(x: f64) -> f64 {
        x
    }
    fn echo_char(x: char) -> char {
        x
    }
    fn echo_string(x: String) -> String {
        x
    }
    fn echo_bytes(x: Vec<u8>) -> Vec<u8> {
        x
    }
    fn echo_strings(x: Vec<String>) -> Vec<String> {
        x
    }
    fn echo_record(x: Mixed) -> Mixed {
        x
    }
    fn echo_tuple(x: (u8, String, f64)) -> (u8, String, f64) {
        x
    }
    fn echo_variant(x: Shape) -> Shape {
        x
    }
    fn echo_enum(x: Color) -> Color {
        x
    }
    fn echo_option(x: Option<String>) -> Option<String> {
        x
    }
    fn echo_result(x: Result<u32, String>) -> Result<u32, String> {
        x
    }
    fn echo_small_flags(x: SmallFlags) -> SmallFlags {
        x
    }
    fn echo_big_flags(x: BigFlags) -> BigFlags {
        x
    }
    fn echo_nested(x: Vec<Item>) -> Vec<Item> {
        x
    }
    fn echo_big(x: Big) -> Big {
        x
    }

    #[allow(clippy::too_many_arguments)]
    fn sum18(
        a1: u32,
        a2: u32,
        a3: u32,
        a4: u32,
        a5: u32,
        a6: u32,
        a7: u32,
        a8: u32,
        a9: u32,
        a10: u32,
        a11: u32,
        a12: u32,
        a13: u32,
        a14: u32,
        a15: u32,
        a16: u32,
        a17: u32,
        a18: u32,
    ) -> u64 {
        [
            a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18,
        ]
        .iter()
        .map(|&a| u64::from(a))
        .sum()
    }

    fn make_big() -> Big {
        Big {
            f1: 1,
            f2: 2,
            f3: 3,
            f4: u64::MAX,
            f5: 5,
            f6: "six".to_string(),
            f7: "seven".to_string(),
            f8: String::new(),
            f9: 9.5,
            f10: -10.25,
            f11: 11.5,
            f12: -12.0,
            f13: -13,
            f14: -14,
            f15: -15,
            f16: i64::MIN,
            f17: true,
            f18: 'λ',
            f19: vec![1, 2, 3, 255],
            f20: Some(20),
        }
    }
}

export!(Types);
