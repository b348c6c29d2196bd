//! Instance snapshots: restore gives the same state as a full replay, never re-runs start code,
//! falls back past damaged snapshots, and stores unchanged pages once.

use golemw_runtime::snapshots;
use golemw_runtime::{Error, Executor, ExecutorOptions, RecoveryMode, SnapshotPolicy, WorkerId};
use golemw_tests::guest_wasm;
use golemw_tests::Completes;

fn open(dir: &std::path::Path, policy: &str) -> std::sync::Arc<Executor> {
    open_with_images(
        dir,
        policy,
        ExecutorOptions::default().memory_image_min_bytes,
    )
}

fn setup(
    dir: &std::path::Path,
    policy: &str,
    wasm: &[u8],
    name: &str,
) -> (std::sync::Arc<Executor>, WorkerId) {
    let ex = open(dir, policy);
    ex.components().add(name, wasm).expect("add component");
    let id = ex.worker_id(name, "w").unwrap();
    (ex, id)
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ex.invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .result
}

fn snapshot_indexes(ex: &Executor, id: &WorkerId) -> Vec<u64> {
    let uid = ex.worker_record(id).unwrap().uid;
    snapshots::list(ex.storage(), &uid)
        .unwrap()
        .iter()
        .map(|s| s.index)
        .collect()
}

/// Allocates, frees, grows and touches memory across several snapshots.
fn memory_workload(ex: &Executor, id: &WorkerId) -> String {
    invoke(ex, id, "fill-mib", &["4"]);
    let a = invoke(ex, id, "alloc", &["512"]).unwrap();
    invoke(ex, id, "alloc", &["2048"]);
    invoke(ex, id, "touch", &["10"]);
    invoke(ex, id, "free", &[&a]);
    invoke(ex, id, "alloc", &["8192"]); // grows linear memory
    invoke(ex, id, "touch", &["50"]);
    invoke(ex, id, "now", &[]);
    invoke(ex, id, "checksum", &[]).unwrap()
}

#[test]
fn restore_equals_full_replay_for_a_guest_that_allocates_frees_and_grows_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let (ex, id) = setup(dir.path(), "invocations:3", &wasm, "memory");
    let checksum = memory_workload(&ex, &id);
    let memory_before: u64 = invoke(&ex, &id, "memory-bytes", &[])
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        snapshot_indexes(&ex, &id).len() >= 2,
        "{:?}",
        snapshot_indexes(&ex, &id)
    );
    drop(ex);

    let ex = open(dir.path(), "invocations:3");
    let from_snapshot = ex.state_digest(&id, RecoveryMode::Auto).unwrap();
    let report = ex.worker_record(&id).unwrap().last_recovery.unwrap();
    assert!(report.snapshot_index.is_some(), "{report:?}");
    assert!(report.bytes_restored >= memory_before);
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(
        from_snapshot, full,
        "restored state differs from full replay"
    );
    // Every snapshot, not only the newest, leads to the same final state.
    let (reference, checks) = ex.verify_snapshots(&id, true, |_, _| {}).unwrap();
    assert_eq!(reference, full);
    assert!(
        checks.len() >= 2 && checks.iter().all(|c| c.matches),
        "{checks:?}"
    );
    // And the guest sees its state.
    assert_eq!(invoke(&ex, &id, "checksum", &[]).unwrap(), checksum);
}

#[test]
fn state_kept_in_a_non_exported_global_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = golemw_tests::module_with_global_state();
    let (ex, id) = setup(dir.path(), "invocations:1", &wasm, "globals");
    for expected in 1..=5 {
        assert_eq!(invoke(&ex, &id, "incr", &[]).unwrap(), expected.to_string());
    }
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, Some(11), "{report:?}");
    assert_eq!(report.invocations_replayed, 0);
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "5");
}

#[test]
fn restore_does_not_run_start_code_again() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("init")).unwrap();
    let (ex, id) = setup(dir.path(), "invocations:1", &wasm, "init");
    let started = invoke(&ex, &id, "started-at", &[]).unwrap();
    invoke(&ex, &id, "add", &["2"]);
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.is_some());
    // _initialize read the clock and random: had it run again, these would differ.
    assert_eq!(invoke(&ex, &id, "started-at", &[]).unwrap(), started);
    assert_eq!(invoke(&ex, &id, "add", &["1"]).unwrap(), "3");
    drop(ex);
    let ex = open(dir.path(), "off");
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(
        invoke(&ex, &id, "started-at", &[]).unwrap(),
        started,
        "replayed from the oplog"
    );
}

#[test]
fn a_damaged_page_or_manifest_falls_back_to_an_older_snapshot_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let (ex, id) = setup(dir.path(), "invocations:2", &wasm, "memory");
    let checksum = memory_workload(&ex, &id);
    let indexes = snapshot_indexes(&ex, &id);
    assert!(indexes.len() >= 3, "{indexes:?}");
    let uid = ex.worker_record(&id).unwrap().uid;
    drop(ex);

    let newest = indexes[indexes.len() - 1];
    let second = indexes[indexes.len() - 2];
    golemw_tests::corrupt_manifest(dir.path(), &uid, newest);
    assert!(golemw_tests::corrupt_pages_of_snapshot(dir.path(), &uid, second) > 0);
    let ex = open(dir.path(), "off");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(
        report.snapshot_index,
        Some(indexes[indexes.len() - 3]),
        "{report:?}"
    );
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains("checksum mismatch"),
        "{:?}",
        report.skipped
    );
    assert!(
        report.skipped[1].contains(&format!("snapshot at {second}")),
        "{:?}",
        report.skipped
    );
    assert_eq!(invoke(&ex, &id, "checksum", &[]).unwrap(), checksum);
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(ex.state_digest(&id, RecoveryMode::Auto).unwrap(), full);
}

#[test]
fn a_snapshot_of_another_component_version_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("counter")).unwrap();
    let (ex, id) = setup(dir.path(), "invocations:1", &wasm, "counter");
    invoke(&ex, &id, "add", &["4"]);
    ex.components().update("counter", &wasm).unwrap();
    drop(ex);
    golemw_tests::set_worker_component_version(dir.path(), &id, 1);
    let ex = open(dir.path(), "off");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, None);
    assert!(
        report.skipped[0].contains("taken on component version 0"),
        "{:?}",
        report.skipped
    );
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "4");
}

#[test]
fn an_unchanged_page_is_stored_once_and_pruning_collects_unreferenced_pages() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Off,
        snapshots_keep: 2,
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir.path(), options).unwrap();
    ex.components().add("memory", &wasm).unwrap();
    let id = ex.worker_id("memory", "w").unwrap();
    invoke(&ex, &id, "fill-mib", &["8"]);
    let first = ex.snapshot(&id).unwrap();
    let uid = ex.worker_record(&id).unwrap().uid;
    let pages_after_first = snapshots::stored_pages(ex.storage(), &uid).unwrap().len();
    assert_eq!(first.pages_new as usize, pages_after_first);
    assert!(
        first.pages_stored >= 128,
        "8 MiB of data is at least 128 pages: {first:?}"
    );
    // Touch 1% of the data (spread over the buffers, so a few 64 KiB pages each get a write):
    // only the pages holding a write are new; the rest are referenced, not stored again.
    invoke(&ex, &id, "touch", &["1"]);
    let second = ex.snapshot(&id).unwrap();
    assert!(
        second.pages_new > 0 && second.pages_new * 4 < second.pages_stored,
        "{second:?}"
    );
    let pages_after_second = snapshots::stored_pages(ex.storage(), &uid).unwrap().len();
    assert_eq!(
        pages_after_second,
        pages_after_first + second.pages_new as usize
    );
    // A third snapshot prunes the first (keep 2); its pages that nobody else uses go with it.
    invoke(&ex, &id, "touch", &["1"]);
    let third = ex.snapshot(&id).unwrap();
    assert_eq!(snapshot_indexes(&ex, &id).len(), 2);
    let pages_after_third = snapshots::stored_pages(ex.storage(), &uid).unwrap().len();
    assert!(
        pages_after_third < pages_after_second + third.pages_new as usize,
        "pages only the first snapshot used were collected"
    );
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(ex.state_digest(&id, RecoveryMode::Auto).unwrap(), full);
}

#[test]
fn a_module_that_mutates_its_tables_is_not_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = golemw_tests::module_with_table_mutation();
    let (ex, id) = setup(dir.path(), "invocations:1", &wasm, "tables");
    invoke(&ex, &id, "incr", &[]);
    invoke(&ex, &id, "incr", &[]);
    assert!(snapshot_indexes(&ex, &id).is_empty());
    let reason = ex.snapshot_blocker(&id).unwrap().expect("a reason");
    assert!(
        reason.contains("table.grow") || reason.contains("table.set"),
        "{reason}"
    );
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, None);
    assert!(
        report.skipped[0].contains("snapshots are not used"),
        "{:?}",
        report.skipped
    );
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "2");
}

/// What a fresh instance writes before guest code runs (its active data segments) is known from
/// the module, so a restore can skip reading the rest; a `start` function makes it unknowable.
#[test]
fn memory_a_fresh_instance_initialises_is_read_from_its_data_segments() {
    use wasm_encoder::{
        ConstExpr, DataSection, Function, FunctionSection, MemorySection, MemoryType, Module,
        StartSection, TypeSection,
    };
    let module = |start: bool| {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut functions = FunctionSection::new();
        functions.function(0);
        m.section(&functions);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 2,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&memories);
        if start {
            m.section(&StartSection { function_index: 0 });
        }
        let mut code = wasm_encoder::CodeSection::new();
        let mut body = Function::new([]);
        body.instruction(&wasm_encoder::Instruction::End);
        code.function(&body);
        m.section(&code);
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(70_000), b"hello".iter().copied());
        data.passive(b"later".iter().copied());
        m.section(&data);
        m.finish()
    };
    let ranges = golemw_runtime::component::initialized_memory(&module(false)).unwrap();
    let expected: Vec<std::ops::Range<u64>> = std::iter::once(70_000..70_005).collect();
    assert_eq!(ranges, Some(expected));
    assert_eq!(
        golemw_runtime::component::initialized_memory(&module(true)).unwrap(),
        None
    );
    // The memory guest: everything it initialises lies inside its initial memory.
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let ranges = golemw_runtime::component::initialized_memory(&wasm)
        .unwrap()
        .expect("a wit-bindgen guest has no start function");
    assert!(!ranges.is_empty());
}

fn open_tracking(
    dir: &std::path::Path,
    track_writes: bool,
) -> (std::sync::Arc<Executor>, WorkerId) {
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Off,
        snapshots_keep: 64,
        fsync: false,
        track_writes,
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir, options).expect("open the data directory");
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    ex.components().add("memory", &wasm).expect("add component");
    let id = ex.worker_id("memory", "w").unwrap();
    (ex, id)
}

fn manifests(ex: &Executor, id: &WorkerId) -> Vec<(u64, Vec<golemw_snapshot::PageRef>)> {
    let uid = ex.worker_record(id).unwrap().uid;
    snapshots::indexes(ex.storage(), &uid)
        .unwrap()
        .into_iter()
        .map(|index| {
            let manifest = snapshots::get(ex.storage(), &uid, index)
                .unwrap()
                .unwrap()
                .unwrap();
            (index, manifest.pages)
        })
        .collect()
}

/// The kernel's record of written pages (where it has one) must give snapshots identical to
/// reading every page, and an in-place rewind that trusts it must land on the state a full
/// replay reaches.
#[test]
fn write_tracking_gives_the_same_snapshots_and_rewinds_as_comparing_every_page() {
    let mut runs = Vec::new();
    for track_writes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (ex, id) = open_tracking(dir.path(), track_writes);
        // As `memory_workload`, without its clock call: the two runs must be byte-identical.
        invoke(&ex, &id, "fill-mib", &["4"]);
        let a = invoke(&ex, &id, "alloc", &["512"]).unwrap();
        invoke(&ex, &id, "touch", &["10"]);
        invoke(&ex, &id, "free", &[&a]);
        invoke(&ex, &id, "alloc", &["8192"]); // grows linear memory
        invoke(&ex, &id, "touch", &["50"]);
        let checksum = invoke(&ex, &id, "checksum", &[]).unwrap();
        ex.snapshot(&id).unwrap();
        if track_writes && golemw_snapshot::dirty::available().is_ok() {
            assert!(
                ex.tracks_writes(&id).unwrap(),
                "the kernel can track writes"
            );
        } else if !track_writes {
            assert!(!ex.tracks_writes(&id).unwrap());
        }
        // A rewind must undo what changed between the target's snapshot and the newest one
        // (seen in their page tables) and what was written since the newest (told by the
        // kernel). Each alone; the second after the record restarted at the first rewind.
        let mut at_target = String::new();
        for written_since_newest in [false, true] {
            invoke(&ex, &id, "touch", &["3"]);
            at_target = invoke(&ex, &id, "checksum", &[]).unwrap();
            ex.snapshot(&id).unwrap();
            let target = ex.oplog_len(&id).unwrap();
            invoke(&ex, &id, "touch", &["20"]);
            if !written_since_newest {
                ex.snapshot(&id).unwrap();
            }
            match ex.invoke(&id, "jump", &[target.to_string()], None).done() {
                Err(Error::InvocationUndone { .. }) => {}
                other => panic!("the jump should undo its own invocation: {other:?}"),
            }
            let report = ex.worker_record(&id).unwrap().last_recovery.unwrap();
            assert!(
                report.pages_rewritten.is_some(),
                "rewound in place: {report:?}"
            );
            assert_eq!(report.snapshot_index, Some(target), "{report:?}");
            // The jump deleted everything after the target.
            assert_eq!(invoke(&ex, &id, "checksum", &[]).unwrap(), at_target);
        }
        let rewound = ex.active_state_digest(&id).unwrap();
        // After the rewind the record restarts from the snapshot: work and capture again.
        invoke(&ex, &id, "touch", &["7"]);
        ex.snapshot(&id).unwrap();
        invoke(&ex, &id, "touch", &["2"]);
        ex.snapshot(&id).unwrap();
        // The instance that was rewound and captured again equals a full replay.
        let live = ex.active_state_digest(&id).unwrap();
        let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
        assert_eq!(
            live, full,
            "the rewound instance differs from a full replay"
        );
        let auto = ex.state_digest(&id, RecoveryMode::Auto).unwrap();
        assert_eq!(auto, full, "snapshot recovery differs from a full replay");
        // A fresh instance restored from a snapshot tracks from the restore on.
        ex.recover(&id, RecoveryMode::Auto).unwrap();
        if track_writes && golemw_snapshot::dirty::available().is_ok() {
            assert!(
                ex.tracks_writes(&id).unwrap(),
                "tracking from the restore on"
            );
        }
        invoke(&ex, &id, "touch-pages", &["3"]);
        ex.snapshot(&id).unwrap();
        invoke(&ex, &id, "touch", &["1"]);
        ex.snapshot(&id).unwrap();
        let after = invoke(&ex, &id, "checksum", &[]).unwrap();
        let pages = manifests(&ex, &id);
        let live = ex.active_state_digest(&id).unwrap();
        let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
        assert_eq!(
            live, full,
            "the restored instance differs from a full replay"
        );
        runs.push((checksum, at_target, rewound, after, pages));
    }
    let (tracked, compared) = (&runs[0], &runs[1]);
    assert_eq!(tracked.0, compared.0);
    assert_eq!(tracked.1, compared.1);
    assert_eq!(
        tracked.2, compared.2,
        "the rewinds reached different states"
    );
    assert_eq!(tracked.3, compared.3);
    assert_eq!(tracked.4, compared.4, "snapshots differ page for page");
}

fn open_with_images(
    dir: &std::path::Path,
    policy: &str,
    images: Option<u64>,
) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        snapshot_policy: policy.parse::<SnapshotPolicy>().unwrap(),
        snapshots_keep: 16,
        memory_image_min_bytes: images,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

/// A `memory` worker whose executor keeps an image of any memory, snapshotting every second
/// invocation.
fn memory_worker_imaging_all(dir: &std::path::Path) -> (std::sync::Arc<Executor>, WorkerId) {
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let ex = open_with_images(dir, "invocations:2", Some(0));
    ex.components().add("memory", &wasm).unwrap();
    let id = ex.worker_id("memory", "w").unwrap();
    (ex, id)
}

/// The state a full replay gives, from a process that keeps no image and takes no snapshot.
fn full_replay_digest(dir: &std::path::Path, id: &WorkerId) -> String {
    let ex = open_with_images(dir, "off", None);
    ex.state_digest(id, RecoveryMode::FullReplay).unwrap()
}

/// Flips a byte in every 7th 64 KiB page of a file and cuts its last third.
fn damage_image(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = file.metadata().unwrap().len();
    let page = golemw_snapshot::PAGE_BYTES as u64;
    for offset in (0..len).step_by(7 * page as usize) {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset + 1000).unwrap();
        file.write_all_at(&[byte[0] ^ 0x33], offset + 1000).unwrap();
    }
    file.set_len(len / 3 * 2).unwrap();
}

#[test]
fn a_memory_image_restores_the_snapshot_and_pages_it_has_wrong_come_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = memory_worker_imaging_all(dir.path());
    memory_workload(&ex, &id);
    let uid = ex.worker_record(&id).unwrap().uid;
    let image = snapshots::image_path(ex.storage(), &uid);
    invoke(&ex, &id, "touch", &["5"]);
    // The second invocation since the last snapshot: a snapshot, and its image.
    let checksum = invoke(&ex, &id, "checksum", &[]).unwrap();
    let memory_bytes: u64 = invoke(&ex, &id, "memory-bytes", &[])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(std::fs::metadata(&image).unwrap().len(), memory_bytes);
    drop(ex);

    // A damaged image: its wrong pages (and the part cut off) are read from storage.
    damage_image(&image);
    let ex = open_with_images(dir.path(), "invocations:2", Some(0));
    let newest = *snapshot_indexes(&ex, &id).last().unwrap();
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, Some(newest), "{report:?}");
    let used = report.image.expect("the image was mapped");
    assert_eq!(
        used.pages * golemw_snapshot::PAGE_BYTES as u64,
        memory_bytes
    );
    assert!(used.repaired > 0 && used.repaired < used.pages, "{used:?}");
    assert_eq!(invoke(&ex, &id, "checksum", &[]).unwrap(), checksum);
    // Two invocations on the image-mapped memory, growing it: a snapshot writes the pages
    // they changed, and those the image had wrong, into the image.
    invoke(&ex, &id, "alloc", &["70000"]);
    invoke(&ex, &id, "touch", &["30"]);
    let live = ex.active_state_digest(&id).unwrap();
    drop(ex);
    assert_eq!(full_replay_digest(dir.path(), &id), live);

    // A stale image (of a newer state than the snapshot used): pages differing are repaired.
    let ex = open_with_images(dir.path(), "off", Some(0));
    let indexes = snapshot_indexes(&ex, &id);
    let newest = indexes[indexes.len() - 1];
    snapshots::delete_where(ex.storage(), &uid, |index| index == newest).unwrap();
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, Some(indexes[indexes.len() - 2]));
    assert!(report.entries_replayed > 0, "{report:?}");
    assert_eq!(ex.active_state_digest(&id).unwrap(), live);
    drop(ex);

    // An image that matches: the snapshot's own stored pages are not even read (they are
    // damaged here), and `snapshot verify`, which reads storage, finds the damage.
    let ex = open_with_images(dir.path(), "invocations:1", Some(0));
    invoke(&ex, &id, "touch", &["1"]);
    let live = ex.active_state_digest(&id).unwrap();
    let newest = *snapshot_indexes(&ex, &id).last().unwrap();
    drop(ex);
    assert!(golemw_tests::corrupt_pages_of_snapshot(dir.path(), &uid, newest) > 0);
    let ex = open_with_images(dir.path(), "off", Some(0));
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.snapshot_index, Some(newest), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(
        report.image.map(|used| used.repaired),
        Some(0),
        "{report:?}"
    );
    assert_eq!(ex.active_state_digest(&id).unwrap(), live);
    let (_, checks) = ex.verify_snapshots(&id, false, |_, _| {}).unwrap();
    assert_eq!(checks.len(), 1);
    assert!(!checks[0].matches, "{checks:?}");
    // Without images the damaged snapshot is skipped.
    drop(ex);
    let ex = open_with_images(dir.path(), "off", None);
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_ne!(report.snapshot_index, Some(newest), "{report:?}");
    assert_eq!(report.image, None);
    assert_eq!(ex.active_state_digest(&id).unwrap(), live);
}

#[test]
fn an_image_that_cannot_be_written_or_read_costs_only_speed() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = memory_worker_imaging_all(dir.path());
    invoke(&ex, &id, "fill-mib", &["1"]);
    let uid = ex.worker_record(&id).unwrap().uid;
    let image = snapshots::image_path(ex.storage(), &uid);
    // Something that is not a file where the image goes: the capture drops the image.
    std::fs::create_dir_all(image.join("in-the-way")).unwrap();
    invoke(&ex, &id, "touch", &["20"]);
    let live = ex.active_state_digest(&id).unwrap();
    assert!(image.is_dir());
    let images: Vec<_> = std::fs::read_dir(image.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(images.len(), 1, "nothing left behind: {images:?}");
    drop(ex);
    let ex = open_with_images(dir.path(), "off", Some(0));
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.is_some(), "{report:?}");
    assert_eq!(ex.active_state_digest(&id).unwrap(), live);
    // Deleting the worker deletes its image.
    std::fs::remove_dir_all(&image).unwrap();
    drop(ex);
    let ex = open_with_images(dir.path(), "invocations:1", Some(0));
    invoke(&ex, &id, "touch", &["1"]);
    assert!(image.is_file());
    // What a crash between making a replacement image and renaming it would leave.
    let unfinished = image.with_extension("mem.new");
    std::fs::write(&unfinished, b"").unwrap();
    ex.delete_worker(&id).unwrap();
    assert!(!image.exists() && !unfinished.exists());
}

/// A crash between deleting a worker (committed) and unlinking its image leaves the file; the
/// next open of the data directory removes it, and keeps the images of workers that exist.
#[test]
fn the_image_of_a_deleted_worker_is_removed_when_the_data_directory_is_next_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = memory_worker_imaging_all(dir.path());
    invoke(&ex, &id, "fill-mib", &["1"]);
    invoke(&ex, &id, "touch", &["1"]);
    let uid = ex.worker_record(&id).unwrap().uid;
    let image = snapshots::image_path(ex.storage(), &uid);
    assert!(image.is_file());
    let live = ex.active_state_digest(&id).unwrap();
    // What the crash leaves: the image (and a replacement being written) of a worker whose
    // deletion was committed.
    let orphan = snapshots::image_path(ex.storage(), &uuid::Uuid::new_v4());
    std::fs::copy(&image, &orphan).unwrap();
    let unfinished = orphan.with_extension("mem.new");
    std::fs::write(&unfinished, b"").unwrap();
    drop(ex);

    let ex = open_with_images(dir.path(), "off", Some(0));
    assert!(!orphan.exists() && !unfinished.exists());
    assert!(image.is_file());
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(
        report.image.is_some(),
        "the live worker's image is used: {report:?}"
    );
    assert_eq!(ex.active_state_digest(&id).unwrap(), live);
}

/// `replay-ms:N` snapshots once the invocations since the last snapshot took N ms of guest
/// time, whatever their number: an invocation writing 8 MiB of noise (milliseconds) is followed
/// by a snapshot under `replay-ms:1` and not under `replay-ms:100000`, and a restart after it
/// replays nothing. It is the default policy.
#[test]
fn replay_ms_snapshots_by_the_time_a_restart_would_replay() {
    assert_eq!(
        SnapshotPolicy::default(),
        "replay-ms:50".parse::<SnapshotPolicy>().unwrap()
    );
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "replay-ms:100000", &wasm, "memory");
    invoke(&ex, &id, "fill-mib", &["8"]);
    invoke(&ex, &id, "checksum", &[]);
    assert!(
        snapshot_indexes(&ex, &id).is_empty(),
        "no snapshot before 100 s of guest time"
    );
    drop(ex);

    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "replay-ms:1", &wasm, "memory");
    invoke(&ex, &id, "fill-mib", &["8"]);
    let after_fill = snapshot_indexes(&ex, &id);
    assert_eq!(
        after_fill.len(),
        1,
        "a snapshot after the fill: {after_fill:?}"
    );
    let digest = invoke(&ex, &id, "checksum", &[]).unwrap();
    drop(ex);
    let ex = open(dir.path(), "replay-ms:1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    let newest = *snapshot_indexes(&ex, &id).last().unwrap();
    assert_eq!(report.snapshot_index, Some(newest));
    assert!(
        report.invocations_replayed <= 1,
        "replayed {} invocations after the snapshot",
        report.invocations_replayed
    );
    assert_eq!(invoke(&ex, &id, "checksum", &[]).unwrap(), digest);
}
