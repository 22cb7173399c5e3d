//! Backups taken while signed benchmarks stream in, restored into a new database on both
//! backends; and what a backup or a restore refuses.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use meshtun_proto::IdentityKey;

use super::*;
use crate::commands::{init, write_secret};
use crate::store::testutil::{benchmark, controller, drop_audit_triggers, execute, node};
use crate::store::Store;

/// A configuration in `dir` on `database`, with the fixtures' controller key (0xc0…).
fn config(dir: &Path, database: &str) -> ControllerConfig {
    let text = format!(
        "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n\
         database = \"{database}\"\n"
    );
    let config = ControllerConfig::parse(&text, &dir.join("controller.toml")).unwrap();
    if !config.key_file.exists() {
        write_secret(
            &config.key_file,
            &IdentityKey::from_bytes([0xc0; 32]).to_base64(),
        )
        .unwrap();
    }
    config
}

/// A database of the shared PostgreSQL cluster (`None`: no PostgreSQL, test skipped).
fn pg_database(test: &str) -> Option<String> {
    let cluster = crate::temp_cluster::shared_or_skip(test)?;
    Some(cluster.url(&cluster.create_database("backup").unwrap()))
}

fn seqs(database: &Database) -> Vec<u64> {
    let store = Store::connect(database).unwrap();
    let mut seqs: Vec<u64> = store
        .benchmarks("node-a", 1_000_000)
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Backs `source` up while a writer stores signed benchmarks as fast as it can, restores
/// the backup into `target` and checks: every benchmark acknowledged before the backup
/// began is there, nothing never acknowledged is, and the chain verifies.
fn backup_while_benchmarks_stream_in(dir: &Path, source: &str, target: &str) {
    let source = config(dir, source);
    init(&source).unwrap();
    let store = Arc::new(Store::connect(&source.database).unwrap());
    let (record, key) = node("node-a", 1);
    store.add_node(&record).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for seq in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (record, body, sig) = benchmark(&key, "node-a", seq, 0.9);
                store
                    .insert_benchmark(&controller(), &record, &body, &sig, &record_path())
                    .unwrap();
                acked.lock().unwrap().push(seq);
            }
        })
    };
    while acked.lock().unwrap().len() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = acked.lock().unwrap().len() as u64;
    let file = dir.join("controller.backup");
    let report = backup(&source, &file).unwrap();
    let after = acked.lock().unwrap().len() as u64;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), report.bytes);
    let text = std::fs::read(&file).unwrap();
    assert!(text.starts_with(MAGIC.as_bytes()));
    assert!(String::from_utf8_lossy(&text[..1024]).contains("SECRET: this file holds"));

    let target = config(dir, target);
    let (header, verified) = restore(&target, &file, false).unwrap();
    assert_eq!(header, report.header);
    let restored = seqs(&target.database);
    assert!(
        restored.len() as u64 >= before,
        "{} < {before}",
        restored.len()
    );
    assert_eq!(restored, (1..=restored.len() as u64).collect::<Vec<_>>());
    assert!(
        restored.len() as u64 <= after,
        "{} > {after}",
        restored.len()
    );
    assert_eq!(verified.chain.signatures_verified, restored.len() as u64);
    Store::connect(&target.database)
        .unwrap()
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap();
}

fn record_path() -> String {
    crate::store::testutil::bench_path("node-a")
}

#[test]
fn sqlite_backup_while_benchmarks_stream_in_restores_every_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    backup_while_benchmarks_stream_in(dir.path(), "source.db", "restored/controller.db");
}

#[test]
fn postgres_backup_while_benchmarks_stream_in_restores_every_acknowledged_one() {
    let test = "postgres_backup_while_benchmarks_stream_in";
    let (Some(source), Some(target)) = (pg_database(test), pg_database(test)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    backup_while_benchmarks_stream_in(dir.path(), &source, &target);
    // The target now holds tables: a second restore is refused, and --force replaces.
    let config = config(dir.path(), &target);
    let file = dir.path().join("controller.backup");
    let err = restore(&config, &file, false).unwrap_err().to_string();
    assert!(err.contains("holds") && err.contains("--force"), "{err}");
    restore(&config, &file, true).unwrap();
}

/// A configuration reaching `database` of `cluster` over TCP with a password file.
fn tcp_config(
    dir: &Path,
    cluster: &crate::temp_cluster::TempCluster,
    database: &str,
) -> ControllerConfig {
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{database}",
        crate::temp_cluster::SUPERUSER,
        cluster.tcp_port().unwrap()
    );
    let text = format!(
        "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n\
         database = \"{url}\"\ndatabase_password_file = \"pw\"\n"
    );
    ControllerConfig::parse(&text, &dir.join("controller.toml")).unwrap()
}

/// pg_dump and pg_restore get the password from the configured file (through a private
/// PGPASSFILE, whatever its characters), with nothing of it in their environment.
#[test]
fn postgres_backup_and_restore_over_tcp_with_a_password() {
    let test = "postgres_backup_and_restore_over_tcp_with_a_password";
    let options = crate::temp_cluster::Options {
        tcp_password: true,
        ..Default::default()
    };
    let Some(cluster) = crate::temp_cluster::start_or_skip(test, options) else {
        return;
    };
    // A password that needs escaping in a pgpass line.
    let password = r"a:b\c:";
    cluster
        .psql(
            "postgres",
            &format!(
                "ALTER ROLE {} PASSWORD '{password}'",
                crate::temp_cluster::SUPERUSER
            ),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, password).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (source, target) = (
        cluster.create_database("src").unwrap(),
        cluster.create_database("dst").unwrap(),
    );
    let source = tcp_config(dir.path(), &cluster, &source);
    config(dir.path(), "unused.db"); // writes the fixtures' controller key
    init(&source).unwrap();
    Store::connect(&source.database)
        .unwrap()
        .add_node(&node("node-a", 1).0)
        .unwrap();
    let file = dir.path().join("pg.backup");
    let report = backup(&source, &file).unwrap();
    assert_eq!(report.header.backend, Backend::Postgres);
    let target = tcp_config(dir.path(), &cluster, &target);
    let (_, verified) = restore(&target, &file, false).unwrap();
    assert_eq!(verified.chain.counts[&crate::store::AuditKind::Enroll], 1);
    assert_eq!(
        Store::connect(&target.database)
            .unwrap()
            .nodes()
            .unwrap()
            .len(),
        1
    );
    // A wrong password fails, naming pg_dump, without echoing either password.
    std::fs::write(&pw, "wrong").unwrap();
    let err = backup(&source, &dir.path().join("again"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("pg_dump:"), "{err}");
    assert!(!err.contains("wrong") && !err.contains(password), "{err}");
    assert!(!dir.path().join("again").exists());
}

/// A backup of a fresh SQLite controller in `dir`.
fn sqlite_backup(dir: &Path) -> (ControllerConfig, PathBuf) {
    let source = config(dir, "source.db");
    init(&source).unwrap();
    let file = dir.join("controller.backup");
    backup(&source, &file).unwrap();
    (source, file)
}

#[test]
fn a_backup_never_replaces_a_file_nor_follows_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let (source, file) = sqlite_backup(dir.path());
    let first = std::fs::read(&file).unwrap();
    let err = backup(&source, &file).unwrap_err().to_string();
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), first);
    // A link planted where the backup goes, to a file the attacker would read later.
    let planted = dir.path().join("planted");
    std::fs::write(&planted, "").unwrap();
    let link = dir.path().join("linked.backup");
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    let err = backup(&source, &link).unwrap_err().to_string();
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&planted).unwrap(), b"");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".tmp.db"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_directory_others_can_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = sqlite_backup(dir.path());
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = backup(&source, &open.join("b")).unwrap_err().to_string();
    assert!(err.contains("mode 0777"), "{err}");
    assert!(!open.join("b").exists());
    // Sticky, as /tmp is: others could still plant the files SQLite creates beside the copy.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = backup(&source, &open.join("b")).unwrap_err().to_string();
    assert!(err.contains("mode 1777"), "{err}");
    // A private directory below a sticky one is fine: no one else can change it.
    let private = open.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    backup(&source, &private.join("b")).unwrap();
    if nix::unistd::geteuid().is_root() {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let err = backup(&source, &theirs.join("b")).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}

#[test]
fn restore_refuses_a_used_database_another_controllers_backup_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let (source, file) = sqlite_backup(dir.path());
    // Into the source itself, which holds a database.
    let err = restore(&source, &file, false).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    restore(&source, &file, true).unwrap();
    // Another controller's key.
    let other = tempfile::tempdir().unwrap();
    let stranger = config(other.path(), "new.db");
    std::fs::remove_file(&stranger.key_file).unwrap();
    write_secret(&stranger.key_file, &IdentityKey::generate().to_base64()).unwrap();
    let err = restore(&stranger, &file, false).unwrap_err().to_string();
    assert!(err.contains("not this controller's key"), "{err}");
    assert!(!other.path().join("new.db").exists());
    // Not a backup.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "SQLite format 3\0").unwrap();
    let target = config(dir.path(), "new.db");
    let err = restore(&target, &junk, false).unwrap_err().to_string();
    assert!(err.contains("not a meshtun-controller backup"), "{err}");
}

#[test]
fn a_backup_whose_audit_chain_was_altered_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let source = config(dir.path(), "source.db");
    init(&source).unwrap();
    let store = Store::connect(&source.database).unwrap();
    store.add_node(&node("node-a", 1).0).unwrap();
    drop_audit_triggers(&store);
    execute(
        &store,
        "UPDATE audit SET entry = replace(entry, 'node-a', 'node-z')",
    )
    .unwrap();
    drop(store);
    let file = dir.path().join("controller.backup");
    backup(&source, &file).unwrap();
    let target = config(dir.path(), "new.db");
    let err = restore(&target, &file, false).unwrap_err();
    assert!(matches!(err, CommandError::Audit(_)), "{err}");
    assert!(!dir.path().join("new.db").exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".new.db"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn headers_round_trip_and_strangers_are_refused() {
    let header = Header {
        backend: Backend::Postgres,
        created_ms: 17,
        controller_key: controller(),
    };
    let mut bytes = header.encode().into_bytes();
    bytes.extend_from_slice(b"PGDMP...");
    let mut reader = BufReader::new(bytes.as_slice());
    assert_eq!(Header::read(&mut reader).unwrap(), header);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, b"PGDMP...");
    let long = format!("{MAGIC}\n{}", "x".repeat(5000));
    let err = Header::read(&mut BufReader::new(long.as_bytes())).unwrap_err();
    assert!(err.contains("does not end"), "{err}");
    let odd = header.encode().replace("postgres", "oracle");
    let err = Header::read(&mut BufReader::new(odd.as_bytes())).unwrap_err();
    assert!(err.contains("unknown backend"), "{err}");
}
