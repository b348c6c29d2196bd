//! A worker that uses wasi:blobstore (blobstore, container, types) as Golem 1.0 provides it.

wit_bindgen::generate!({
    world: "golemw:blobstore/blobstore",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::blobstore::api::Guest;
use wasi::blobstore::blobstore::{self as store, ObjectId};
use wasi::blobstore::container::Container;
use wasi::blobstore::types::OutgoingValue;

thread_local! {
    /// The container `keep-container` got: a handle that lives across invocations (and
    /// snapshots).
    static KEPT: std::cell::RefCell<Option<Container>> = const { std::cell::RefCell::new(None) };
}

/// Bytes per write to a value's body (below what `check-write` allows).
const CHUNK_BYTES: usize = 16 << 10;

fn container(name: &str) -> Result<Container, String> {
    store::get_container(name)
}

fn write_data(container_name: &str, object: &str, data: &[u8]) -> Result<(), String> {
    write_into(&container(container_name)?, object, data)
}

fn write_into(container: &Container, object: &str, data: &[u8]) -> Result<(), String> {
    let value = OutgoingValue::new_outgoing_value();
    {
        let body = value
            .outgoing_value_write_body()
            .map_err(|()| "no body stream".to_string())?;
        for chunk in data.chunks(CHUNK_BYTES) {
            body.blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the body: {e:?}"))?;
        }
    }
    container.write_data(object, &value)
}

struct Blobstore;

impl Guest for Blobstore {
    fn create_container(name: String) -> Result<u64, String> {
        let container = store::create_container(&name)?;
        assert_eq!(container.name()?, name);
        Ok(container.info()?.created_at)
    }

    fn container_exists(name: String) -> Result<bool, String> {
        store::container_exists(&name)
    }

    fn delete_container(name: String) -> Result<(), String> {
        store::delete_container(&name)
    }

    fn write(container: String, object: String, data: Vec<u8>) -> Result<(), String> {
        write_data(&container, &object, &data)
    }

    fn write_filled(container: String, object: String, len: u32, byte: u8) -> Result<(), String> {
        write_data(&container, &object, &vec![byte; len as usize])
    }

    fn read(container_name: String, object: String, start: u64, end: u64) -> Result<Vec<u8>, String> {
        container(&container_name)?
            .get_data(&object, start, end)?
            .incoming_value_consume_sync()
    }

    fn size(container_name: String, object: String) -> Result<u64, String> {
        Ok(container(&container_name)?.get_data(&object, 0, u64::MAX)?.size())
    }

    fn list_names(container_name: String) -> Result<Vec<String>, String> {
        let names = container(&container_name)?.list_objects()?;
        let mut all = Vec::new();
        loop {
            let (mut some, end) = names.read_stream_object_names(2)?;
            all.append(&mut some);
            if end {
                break;
            }
        }
        all.sort();
        Ok(all)
    }

    fn has(container_name: String, object: String) -> Result<bool, String> {
        container(&container_name)?.has_object(&object)
    }

    fn info(container_name: String, object: String) -> Result<u64, String> {
        let info = container(&container_name)?.object_info(&object)?;
        assert_eq!((info.name, info.container), (object, container_name));
        Ok(info.size)
    }

    fn delete(container_name: String, object: String) -> Result<(), String> {
        container(&container_name)?.delete_object(&object)
    }

    fn delete_many(container_name: String, objects: Vec<String>) -> Result<(), String> {
        container(&container_name)?.delete_objects(&objects)
    }

    fn clear(container_name: String) -> Result<(), String> {
        container(&container_name)?.clear()
    }

    fn keep_container(name: String) -> Result<(), String> {
        let container = container(&name)?;
        KEPT.with(|kept| *kept.borrow_mut() = Some(container));
        Ok(())
    }

    fn write_kept(object: String, data: Vec<u8>) -> Result<(), String> {
        KEPT.with(|kept| match kept.borrow().as_ref() {
            Some(container) => write_into(container, &object, &data),
            None => Err("no container is kept".into()),
        })
    }

    fn read_kept(object: String) -> Result<Vec<u8>, String> {
        KEPT.with(|kept| match kept.borrow().as_ref() {
            Some(container) => container
                .get_data(&object, 0, u64::MAX)?
                .incoming_value_consume_sync(),
            None => Err("no container is kept".into()),
        })
    }

    fn copy(
        from_container: String,
        from_object: String,
        to_container: String,
        to_object: String,
        moving: bool,
    ) -> Result<(), String> {
        let src = ObjectId {
            container: from_container,
            object: from_object,
        };
        let dest = ObjectId {
            container: to_container,
            object: to_object,
        };
        match moving {
            true => store::move_object(&src, &dest),
            false => store::copy_object(&src, &dest),
        }
    }
}

export!(Blobstore);
