//! A worker that uses wasi:keyvalue@0.1.0 (eventual, eventual-batch, types, error).

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "golemw:keyvalue/keyvalue",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::keyvalue::api::Guest;
use wasi::keyvalue::types::{Bucket, IncomingValue, OutgoingValue};
use wasi::keyvalue::wasi_keyvalue_error::Error;
use wasi::keyvalue::{eventual, eventual_batch};

thread_local! {
    /// The bucket `open-kept` opened: a handle that lives across invocations (and snapshots).
    static KEPT: RefCell<Option<Bucket>> = const { RefCell::new(None) };
}

fn trace(error: Error) -> String {
    error.trace()
}

fn open(name: &str) -> Result<Bucket, String> {
    Bucket::open_bucket(name).map_err(trace)
}

fn outgoing(value: &[u8]) -> Result<OutgoingValue, String> {
    let out = OutgoingValue::new_outgoing_value();
    out.outgoing_value_write_body_sync(value).map_err(trace)?;
    Ok(out)
}

fn consume(value: IncomingValue) -> Result<Vec<u8>, String> {
    value.incoming_value_consume_sync().map_err(trace)
}

fn set_in(bucket: &Bucket, key: &str, value: &[u8]) -> Result<(), String> {
    eventual::set(bucket, key, &outgoing(value)?).map_err(trace)
}

fn get_in(bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, String> {
    match eventual::get(bucket, key).map_err(trace)? {
        Some(value) => consume(value).map(Some),
        None => Ok(None),
    }
}

struct KeyValue;

impl Guest for KeyValue {
    fn set(bucket: String, key: String, value: Vec<u8>) -> Result<(), String> {
        set_in(&open(&bucket)?, &key, &value)
    }

    fn get(bucket: String, key: String) -> Result<Option<Vec<u8>>, String> {
        get_in(&open(&bucket)?, &key)
    }

    fn size(bucket: String, key: String) -> Result<Option<u64>, String> {
        match eventual::get(&open(&bucket)?, &key).map_err(trace)? {
            Some(value) => value.incoming_value_size().map(Some).map_err(trace),
            None => Ok(None),
        }
    }

    fn delete(bucket: String, key: String) -> Result<(), String> {
        eventual::delete(&open(&bucket)?, &key).map_err(trace)
    }

    fn exists(bucket: String, key: String) -> Result<bool, String> {
        eventual::exists(&open(&bucket)?, &key).map_err(trace)
    }

    fn set_many(bucket: String, pairs: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let values = pairs
            .iter()
            .map(|(_, value)| outgoing(value))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<(String, &OutgoingValue)> = pairs
            .iter()
            .zip(&values)
            .map(|((key, _), value)| (key.clone(), value))
            .collect();
        eventual_batch::set_many(&open(&bucket)?, &refs).map_err(trace)
    }

    fn get_many(bucket: String, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, String> {
        eventual_batch::get_many(&open(&bucket)?, &keys)
            .map_err(trace)?
            .into_iter()
            .map(|value| value.map(consume).transpose())
            .collect()
    }

    fn keys(bucket: String) -> Result<Vec<String>, String> {
        let mut keys = eventual_batch::keys(&open(&bucket)?).map_err(trace)?;
        keys.sort();
        Ok(keys)
    }

    fn delete_many(bucket: String, keys: Vec<String>) -> Result<(), String> {
        eventual_batch::delete_many(&open(&bucket)?, &keys).map_err(trace)
    }

    fn set_filled(bucket: String, key: String, len: u32, byte: u8) -> Result<(), String> {
        set_in(&open(&bucket)?, &key, &vec![byte; len as usize])
    }

    fn set_range(bucket: String, prefix: String, count: u32) -> Result<(), String> {
        let bucket = open(&bucket)?;
        for i in 0..count {
            set_in(&bucket, &format!("{prefix}{i}"), i.to_string().as_bytes())?;
        }
        Ok(())
    }

    fn set_unrecorded(bucket: String, key: String, value: Vec<u8>) -> Result<(), String> {
        use golem::api::host::{self, PersistenceLevel};
        let before = host::get_oplog_persistence_level();
        host::set_oplog_persistence_level(PersistenceLevel::PersistNothing);
        let result = set_in(&open(&bucket)?, &key, &value);
        host::set_oplog_persistence_level(before);
        result
    }

    fn set_then_trap(bucket: String, key: String, value: Vec<u8>) {
        set_in(&open(&bucket).unwrap(), &key, &value).unwrap();
        panic!("trapping after the set");
    }

    #[allow(clippy::type_complexity)]
    fn read_own_writes(
        bucket: String,
        key: String,
        value: Vec<u8>,
    ) -> Result<(Option<Vec<u8>>, bool, bool, Option<Vec<u8>>), String> {
        let bucket = open(&bucket)?;
        set_in(&bucket, &key, &value)?;
        let got = get_in(&bucket, &key)?;
        let exists = eventual::exists(&bucket, &key).map_err(trace)?;
        let listed = eventual_batch::keys(&bucket).map_err(trace)?.contains(&key);
        eventual::delete(&bucket, &key).map_err(trace)?;
        Ok((got, exists, listed, get_in(&bucket, &key)?))
    }

    fn fill_range(bucket: String, prefix: String, count: u32, len: u32) -> Result<(), String> {
        let bucket = open(&bucket)?;
        for i in 0..count {
            set_in(&bucket, &format!("{prefix}{i}"), &vec![i as u8; len as usize])?;
        }
        Ok(())
    }

    fn open_kept(bucket: String) -> Result<(), String> {
        let bucket = open(&bucket)?;
        KEPT.with(|kept| *kept.borrow_mut() = Some(bucket));
        Ok(())
    }

    fn set_kept(key: String, value: Vec<u8>) -> Result<(), String> {
        KEPT.with(|kept| match kept.borrow().as_ref() {
            Some(bucket) => set_in(bucket, &key, &value),
            None => Err("no bucket is kept".into()),
        })
    }

    fn get_kept(key: String) -> Result<Option<Vec<u8>>, String> {
        KEPT.with(|kept| match kept.borrow().as_ref() {
            Some(bucket) => get_in(bucket, &key),
            None => Err("no bucket is kept".into()),
        })
    }
}

export!(KeyValue);
