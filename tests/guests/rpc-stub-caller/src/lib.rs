//! Typed worker-to-worker calls: the `rpc-callee` stub interface (written by `golemw
//! stubgen`) imported and called like any WIT interface; golemw links it to golem:rpc.

wit_bindgen::generate!({
    world: "golemw:rpc-stub-caller/stub-caller",
    path: ["../../../wit", "../rpc-callee/wit", "stub", "wit"],
    generate_all,
});

use exports::golemw::rpc_stub_caller::api::Guest;
use golem::rpc::types::Uri;
use golemw::rpc_callee::api::Shapes;
use golemw::rpc_callee_stub::stub_api::Api;
use wasi::io::poll::poll;

/// A client for the `rpc-callee` worker with URI `target`.
fn client(target: &str) -> Api {
    Api::new(&Uri {
        value: target.to_string(),
    })
}

struct Component;

impl Guest for Component {
    fn add(target: String, n: u64) -> u64 {
        client(&target).blocking_add(n)
    }

    fn echo(target: String, v: Shapes) -> Shapes {
        client(&target).blocking_echo(&v)
    }

    fn pair(target: String, a: String, b: u32) -> (String, u32) {
        client(&target).blocking_pair(&a, b)
    }

    fn nothing(target: String) {
        client(&target).blocking_nothing()
    }

    fn fail(target: String, message: String) {
        client(&target).blocking_fail(&message)
    }

    fn add_all(targets: Vec<String>, n: u64) -> Vec<u64> {
        let clients: Vec<Api> = targets.iter().map(|t| client(t)).collect();
        let futures: Vec<_> = clients.iter().map(|c| c.add(n)).collect();
        let pollables: Vec<_> = futures.iter().map(|f| f.subscribe()).collect();
        let mut waiting: Vec<usize> = (0..pollables.len()).collect();
        while !waiting.is_empty() {
            let list: Vec<_> = waiting.iter().map(|&i| &pollables[i]).collect();
            let ready = poll(&list);
            let ready: Vec<usize> = ready.iter().map(|&r| waiting[r as usize]).collect();
            waiting.retain(|i| !ready.contains(i));
        }
        drop(pollables);
        futures
            .iter()
            .map(|f| f.get().expect("ready after poll"))
            .collect()
    }

    fn nothing_async(target: String) -> bool {
        let api = client(&target);
        let future = api.nothing();
        future.subscribe().block();
        future.get()
    }
}

export!(Component);
